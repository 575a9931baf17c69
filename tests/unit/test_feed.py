from __future__ import annotations

from pathlib import Path

import pytest

from app.caterings.feed import (
    FeedError,
    FeedItem,
    deactivation_body,
    diff_feed,
    kcal_from_title,
    parse_feed,
    parse_price,
    product_hash,
)

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "feed.xml"


@pytest.fixture(scope="module")
def sample() -> dict[str, FeedItem]:
    result = parse_feed(SAMPLE.read_bytes())
    assert result.skipped == [] and result.warnings == []
    return {item.custom_id: item for item in result.items}


def test_sample_has_five_items_in_order(sample: dict[str, FeedItem]) -> None:
    assert list(sample) == ["12-3-41", "9-2-30", "15-1-77", "20-4-90", "31-1-12"]


def test_rss_item_with_plain_title_and_link(sample: dict[str, FeedItem]) -> None:
    assert sample["12-3-41"].product_body() == {
        "custom_id": "12-3-41",
        "name": "Office 800 kcal",
        "price": 79.98,
        "kcal": 800,
        "daily_meals": 3,
        "active": True,
        "product_url": "https://zamow.example-catering.pl/diety/office?kcal=800",
        "image_url": "https://zamow.example-catering.pl/img/office.jpg",
    }


def test_g_title_g_link_decimal_comma_and_spaced_availability(sample: dict[str, FeedItem]) -> None:
    item = sample["9-2-30"]
    assert item.name == "Standard 1500 kcal"
    assert item.price == 59.9
    assert item.active is True
    assert item.product_url == "https://zamow.example-catering.pl/diety/standard?kcal=1500"
    assert (item.kcal, item.daily_meals) == (1500, 5)


def test_non_numeric_label_falls_back_to_kcal_in_title(sample: dict[str, FeedItem]) -> None:
    item = sample["15-1-77"]
    assert item.price == 74.95  # no currency
    assert item.kcal == 2500  # custom_label_0 is "wege"
    assert item.daily_meals is None
    assert "daily_meals" not in item.product_body()


def test_out_of_stock_is_inactive_and_missing_image_left_out(sample: dict[str, FeedItem]) -> None:
    item = sample["20-4-90"]
    assert item.active is False
    assert (item.kcal, item.daily_meals) == (1800, 4)
    assert "image_url" not in item.product_body()


def test_sale_price_is_not_the_price(sample: dict[str, FeedItem]) -> None:
    assert sample["31-1-12"].price == 84.5
    assert sample["31-1-12"].kcal == 2000


ATOM = b"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:g="http://base.google.com/ns/1.0">
  <title>Atom feed</title>
  <link rel="self" href="https://zamow.example-catering.pl/feed.atom"/>
  <entry>
    <g:id>12-3-41</g:id>
    <title>Office 800 kcal</title>
    <link rel="self" href="https://zamow.example-catering.pl/api/12-3-41"/>
    <link href="https://zamow.example-catering.pl/diety/office"/>
    <g:availability>in stock</g:availability>
    <g:price>39,99 PLN</g:price>
    <g:image_link>https://zamow.example-catering.pl/img/office.jpg</g:image_link>
  </entry>
  <entry>
    <g:id>9-2-30</g:id>
    <g:title>Standard 1500 kcal</g:title>
    <g:link>https://zamow.example-catering.pl/diety/standard</g:link>
    <g:availability>preorder</g:availability>
    <g:price>59.90</g:price>
    <g:custom_label_1>5</g:custom_label_1>
  </entry>
</feed>"""


def test_atom_feed() -> None:
    result = parse_feed(ATOM)
    office, standard = result.items
    assert office.product_body() == {
        "custom_id": "12-3-41",
        "name": "Office 800 kcal",
        "price": 39.99,
        "kcal": 800,
        "active": True,
        "product_url": "https://zamow.example-catering.pl/diety/office",
        "image_url": "https://zamow.example-catering.pl/img/office.jpg",
    }
    assert standard.product_url == "https://zamow.example-catering.pl/diety/standard"
    assert standard.active is False
    assert (standard.kcal, standard.daily_meals, standard.price) == (1500, 5, 59.9)


def _rss(*items: str) -> bytes:
    body = "".join(f"<item>{item}</item>" for item in items)
    return (
        '<?xml version="1.0"?><rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">'
        f"<channel><title>t</title>{body}</channel></rss>"
    ).encode()


def test_items_without_id_or_title_are_skipped_with_reason() -> None:
    result = parse_feed(
        _rss(
            "<title>No id 500 kcal</title>",
            "<g:id>1-1-1</g:id><title>  </title>",
            "<g:id>2-2-2</g:id><title>Ok</title>",
            "<g:id>2-2-2</g:id><title>Again</title>",
        )
    )
    assert [item.custom_id for item in result.items] == ["2-2-2"]
    assert [(s.position, s.id) for s in result.skipped] == [(1, None), (2, "1-1-1"), (4, "2-2-2")]
    assert "g:id" in result.skipped[0].reason
    assert "title" in result.skipped[1].reason
    assert "duplicate" in result.skipped[2].reason


def test_unreadable_price_keeps_item_without_price_and_warns() -> None:
    result = parse_feed(_rss("<g:id>1-1-1</g:id><title>Office</title><g:price>zapytaj</g:price>"))
    (item,) = result.items
    assert item.price is None
    assert "price" not in item.product_body()
    assert result.skipped == []
    (warning,) = result.warnings
    assert (warning.position, warning.id) == (1, "1-1-1")
    assert "zapytaj" in warning.reason


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("39.99 PLN", 39.99),
        ("39,99 PLN", 39.99),
        ("39.99", 39.99),
        ("1 499,00 PLN", 1499.0),
        ("1,499.00 PLN", 1499.0),
        ("abc", None),
        ("", None),
    ],
)
def test_parse_price(raw: str, expected: float | None) -> None:
    assert parse_price(raw) == expected


def test_kcal_from_title() -> None:
    assert kcal_from_title("Sport Wege 2500 kcal") == 2500
    assert kcal_from_title("Keto 1800kcal") == 1800
    assert kcal_from_title("Dieta 2 500 kcal") == 2500
    assert kcal_from_title("Dieta Mama") is None


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE rss [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0"><channel>
  <item><g:id>1</g:id><title>&lol9;</title></item>
</channel></rss>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0"><channel>
  <item><g:id>1</g:id><title>&secret;</title></item>
</channel></rss>"""

EXTERNAL_HTTP_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY remote SYSTEM "http://127.0.0.1:9/never-fetched">]>
<rss><channel><item><title>&remote;</title></item></channel></rss>"""


@pytest.mark.parametrize("document", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_HTTP_ENTITY])
def test_entities_are_refused(document: bytes) -> None:
    with pytest.raises(FeedError, match="entities"):
        parse_feed(document)


def test_not_xml_is_a_feed_error() -> None:
    with pytest.raises(FeedError, match="well-formed"):
        parse_feed(b"<rss><channel><item>")


# --- diff -------------------------------------------------------------------------------------


def _state(items: list[FeedItem]) -> dict[str, str]:
    return {item.custom_id: product_hash(item.product_body()) for item in items}


def test_product_hash_is_stable_and_key_order_free() -> None:
    assert product_hash({"a": 1, "b": "ł"}) == product_hash({"b": "ł", "a": 1})
    assert product_hash({"a": 1}) != product_hash({"a": 2})
    assert len(product_hash({})) == 64


def test_first_sync_sends_everything() -> None:
    items = parse_feed(SAMPLE.read_bytes()).items
    diff = diff_feed({}, items)
    assert diff.to_send == items
    assert diff.unchanged == [] and diff.vanished == []
    assert diff.next_state == _state(items)


def test_unchanged_feed_sends_nothing() -> None:
    items = parse_feed(SAMPLE.read_bytes()).items
    diff = diff_feed(_state(items), parse_feed(SAMPLE.read_bytes()).items)
    assert diff.to_send == [] and diff.vanished == []
    assert len(diff.unchanged) == 5


def test_changed_item_is_sent() -> None:
    items = parse_feed(SAMPLE.read_bytes()).items
    changed = parse_feed(SAMPLE.read_bytes().replace(b"79.98 PLN", b"81.00 PLN")).items
    diff = diff_feed(_state(items), changed)
    assert [item.custom_id for item in diff.to_send] == ["12-3-41"]
    assert diff.to_send[0].price == 81.0


def test_removed_item_vanishes_once_then_reappears() -> None:
    xml = SAMPLE.read_bytes()
    items = parse_feed(xml).items
    start = xml.index(b"<item>\n      <g:id>20-4-90")
    end = xml.index(b"</item>", start) + len(b"</item>")
    without_keto = parse_feed(xml[:start] + xml[end:]).items
    assert len(without_keto) == 4

    diff = diff_feed(_state(items), without_keto)
    assert diff.vanished == ["20-4-90"]
    assert diff.to_send == []
    assert deactivation_body("20-4-90") == {"custom_id": "20-4-90", "active": False}

    again = diff_feed(diff.next_state, without_keto)
    assert again.vanished == [] and again.to_send == []

    back = diff_feed(again.next_state, items)
    assert [item.custom_id for item in back.to_send] == ["20-4-90"]
