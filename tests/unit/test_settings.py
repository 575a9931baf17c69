import pytest

from app.settings import MissingSettingError, load_settings

REQUIRED = {
    "usercom_api_url": "http://usercom.test/api/public/",
    "usercom_api_key": "k",
    "caterings_api_url": "http://caterings.test/",
    "caterings_api_token": "t",
    "caterings_webhook_secret": "whsec_c2FtcGxlLXNlY3JldC1mb3ItbG9jYWwtdGVzdHMtb25seS0zMmI=",
    "consent_callback_token": "c",
    "admin_token": "a",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # no .env from the working tree
    for name in [*REQUIRED, "database_url"]:
        monkeypatch.delenv(name.upper(), raising=False)


def test_defaults_follow_the_contract() -> None:
    settings = load_settings(**REQUIRED)
    assert settings.database_url == "sqlite+aiosqlite:///./data/bridge.db"
    assert settings.usercom_rate_limit == 10
    assert settings.bridge_timezone == "Europe/Warsaw"
    assert settings.max_body_bytes == 1_048_576


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_a_missing_required_setting_is_named(missing: str) -> None:
    given = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(MissingSettingError, match=missing.upper()):
        load_settings(**given)


def test_several_webhook_secrets_are_split() -> None:
    settings = load_settings(**{**REQUIRED, "caterings_webhook_secret": f"{REQUIRED['caterings_webhook_secret']}, "
                                                                      "whsec_b3RoZXItc2VjcmV0"})
    assert len(settings.webhook_secrets) == 2


def test_a_malformed_secret_is_refused_without_echoing_it() -> None:
    with pytest.raises(MissingSettingError) as error:
        load_settings(**{**REQUIRED, "caterings_webhook_secret": "whsec_%%%notbase64%%%"})
    assert "CATERINGS_WEBHOOK_SECRET" in str(error.value)
    assert "notbase64" not in str(error.value)


def test_secrets_do_not_show_in_repr() -> None:
    assert "c2FtcGxl" not in repr(load_settings(**REQUIRED))


def test_unknown_timezone_is_refused() -> None:
    with pytest.raises(MissingSettingError, match="BRIDGE_TIMEZONE"):
        load_settings(**REQUIRED, bridge_timezone="Mars/Olympus")


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name.upper(), value)
    monkeypatch.setenv("USERCOM_RATE_LIMIT", "3.5")
    assert load_settings().usercom_rate_limit == 3.5
