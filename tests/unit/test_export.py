from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from app.caterings.export import ExportError, RowError, parse_export, parse_local_datetime
from app.caterings.schemas import Order

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
HEADER = (
    "order_id;user_id;user_email;status;created_at;paid_at;first_order;diet_id;variant_id;"
    "calorific_id;item_xml_id;diet_name;kcal;daily_meals;trial;price;delivery_dates"
)
RANGE_HEADER = HEADER.replace("delivery_dates", "delivery_first_date;delivery_last_date;delivery_days_total")
ROW = (
    "41001;1043;anna.kowalska@example.com;paid;2026-01-10 10:00:00;2026-01-10 10:03:00;1;"
    "12;3;41;12-3-41;Office;800;3;0;399,90"
)  # every column but the delivery ones


def _csv(*lines: str, newline: str = "\r\n") -> bytes:
    return newline.join(lines).encode("utf-8")


@pytest.fixture(scope="module")
def sample() -> Any:
    return parse_export((SAMPLES / "orders-export.csv").read_bytes())


def test_sample_orders(sample: Any) -> None:
    assert [order["id"] for order in sample.orders] == [41001, 41002, 41004]
    first = sample.orders[0]
    assert first == {
        "id": 41001,
        "user": {"id": 1043, "email": "anna.kowalska@example.com"},
        "status": "paid",
        "created_at": "2026-01-10T10:00:00+01:00",
        "paid_at": "2026-01-10T10:03:00+01:00",
        "first_order": True,
        "items": [
            {
                "diet_id": 12,
                "variant_id": 3,
                "calorific_id": 41,
                "item_xml_id": "12-3-41",
                "diet_name": "Office",
                "kcal": 800,
                "daily_meals": 3,
                "trial": False,
                "price": "399.90",
                "delivery_dates": ["2026-01-12", "2026-01-13", "2026-01-14", "2026-01-15", "2026-01-16"],
            }
        ],
    }


def test_sample_multi_item_order_and_cancelled_order(sample: Any) -> None:
    two_items, cancelled = sample.orders[1], sample.orders[2]
    assert [item["item_xml_id"] for item in two_items["items"]] == ["15-1-77", "9-2-30"]
    assert [item["trial"] for item in two_items["items"]] == [False, True]
    assert two_items["items"][0]["price"] == "1499.00"  # "1 499,00"
    assert two_items["items"][1]["diet_name"] == "Standard – próbny"
    assert cancelled["status"] == "cancelled"
    assert cancelled["items"][0]["delivery_dates"] == ["2026-03-09", "2026-03-10"]


def test_sample_broken_row_is_reported_on_its_line(sample: Any) -> None:
    (error,) = sample.errors
    assert error.line == 5
    assert "calorific_id is empty" in error.reason
    assert "price 'abc'" in error.reason


def test_sample_orders_fit_the_webhook_order_schema(sample: Any) -> None:
    for order in sample.orders:
        Order.model_validate(order)


def test_cp1250_sample_gives_the_same_orders(sample: Any) -> None:
    other = parse_export((SAMPLES / "orders-export-cp1250.csv").read_bytes())
    assert other.errors == sample.errors
    # The Windows-1250 copy of the sample writes "-" where the UTF-8 copy has "–" (en dash);
    # every other character, "ó" included, must come out the same.
    assert other.orders[1]["items"][1]["diet_name"] == "Standard - próbny"
    expected = copy.deepcopy(sample.orders)
    expected[1]["items"][1]["diet_name"] = "Standard - próbny"
    assert other.orders == expected


def test_comma_separated_lf_without_bom() -> None:
    header = HEADER.replace(";", ",")
    row = (
        "41001,1043,anna.kowalska@example.com,paid,2026-01-10 10:00:00,,tak,"
        '12,3,41,12-3-41,Office,800,3,nie,"1 399,90",2026-01-12|2026-01-13'
    )
    result = parse_export(_csv(header, row, newline="\n"))
    assert result.errors == []
    (order,) = result.orders
    assert order["paid_at"] is None
    assert order["first_order"] is True
    item = order["items"][0]
    assert (item["price"], item["trial"]) == ("1399.90", False)
    assert item["delivery_dates"] == ["2026-01-12", "2026-01-13"]


def test_summer_time_offset() -> None:
    assert parse_local_datetime("2026-07-06 14:03:11").isoformat() == "2026-07-06T14:03:11+02:00"
    assert parse_local_datetime("06.07.2026 14:03").isoformat() == "2026-07-06T14:03:00+02:00"
    assert parse_local_datetime("2026-07-06T12:03:11+00:00").isoformat() == "2026-07-06T12:03:11+00:00"


def test_first_last_total_variant() -> None:
    result = parse_export(
        _csv(
            RANGE_HEADER,
            ROW + ";2026-01-12;2026-01-30;15",  # weekdays only: the list is not known
            ROW.replace("41001", "41005").replace(";12;3;41;", ";9;2;30;") + ";2026-01-12;2026-01-14;3",
            ROW.replace("41001", "41006") + ";2026-01-12;2026-01-15;2",
        )
    )
    assert result.errors == []
    first, every_day, two_days = (order["items"][0] for order in result.orders)
    assert first["delivery_dates"] == ["2026-01-12", "2026-01-30"]
    assert first["delivery_days_total"] == 15
    assert every_day["delivery_dates"] == ["2026-01-12", "2026-01-13", "2026-01-14"]
    assert "delivery_days_total" not in every_day
    assert two_days["delivery_dates"] == ["2026-01-12", "2026-01-15"]
    assert "delivery_days_total" not in two_days


def test_first_last_total_that_does_not_fit_is_a_bad_row() -> None:
    result = parse_export(_csv(RANGE_HEADER, ROW + ";2026-01-12;2026-01-14;9"))
    assert result.orders == []
    assert result.errors == [RowError(2, "delivery_days_total 9 does not fit 2026-01-12..2026-01-14")]


def test_missing_column_names_it() -> None:
    header = HEADER.replace(";kcal;", ";")
    with pytest.raises(ExportError, match="kcal"):
        parse_export(_csv(header, "x"))


def test_missing_delivery_columns_names_both_styles() -> None:
    header = HEADER.replace(";delivery_dates", "")
    with pytest.raises(ExportError, match="delivery_dates .or delivery_first_date"):
        parse_export(_csv(header))


def test_empty_file() -> None:
    with pytest.raises(ExportError, match="empty"):
        parse_export(b"\xef\xbb\xbf\r\n")


def test_one_bad_row_skips_the_whole_order() -> None:
    good = ROW + ";2026-01-12"
    second_item = ROW.replace(";12;3;41;", ";9;2;30;").replace(";800;", ";dużo;") + ";2026-01-12"
    other_order = ROW.replace("41001", "41009") + ";2026-01-12"
    result = parse_export(_csv(HEADER, good, "", second_item, other_order))
    assert [order["id"] for order in result.orders] == [41009]
    assert result.errors == [
        RowError(2, "order 41001 has a bad row at line 4; the whole order is skipped"),
        RowError(4, "kcal 'dużo' is not a number"),
    ]


def test_rows_of_one_order_must_agree() -> None:
    first = ROW + ";2026-01-12"
    other_status = ROW.replace(";paid;", ";cancelled;").replace(";12;3;41;", ";9;2;30;") + ";2026-01-12"
    repeated = ROW + ";2026-01-13"
    result = parse_export(_csv(HEADER, first, other_status, repeated))
    assert result.orders == []
    assert [error.line for error in result.errors] == [2, 3, 4]
    assert "status" in result.errors[1].reason
    assert "repeats the item at line 2" in result.errors[2].reason


def test_wrong_field_count_and_bad_values_are_reported() -> None:
    result = parse_export(
        _csv(
            HEADER,
            "41001;1043;too;few",
            ROW.replace(";paid;", ";zapłacone;").replace(";1;12;", ";może;12;") + ";2026-02-30",
        )
    )
    assert result.orders == []
    assert result.errors[0] == RowError(2, "expected 17 fields, found 4")
    reason = result.errors[1].reason
    assert "status 'zapłacone'" in reason
    assert "first_order 'może'" in reason
    assert "delivery_dates '2026-02-30'" in reason


def test_quoted_multiline_cell_keeps_physical_line_numbers() -> None:
    header = HEADER.replace(";", ",")
    multiline = ROW.replace(";", ",").replace("Office", '"Office\nbiuro"').replace("399,90", '"399,90"')
    bad = ROW.replace(";", ",").replace("41001", "41002").replace("399,90", "abc")
    result = parse_export(_csv(header, multiline + ",2026-01-12", bad + ",2026-01-12"))
    assert result.orders[0]["items"][0]["diet_name"] == "Office\nbiuro"
    assert result.errors == [RowError(4, "price 'abc' is not a number")]
