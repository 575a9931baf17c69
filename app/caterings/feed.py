"""Pure parser of the Caterings product feed (Google Merchant, contract §5.3), and the feed diff.

No I/O here: the caller fetches the bytes, this module turns them into diet-simples and decides
which of them must be sent to User.com.

Parsing rules
-------------
* RSS 2.0 ``<item>`` and Atom ``<entry>`` are both read; Google fields live in the namespace
  ``http://base.google.com/ns/1.0`` (``g:``).
* ``custom_id`` = ``g:id``; ``name`` = ``g:title``, else ``title``; ``product_url`` = ``g:link``,
  else ``link`` (RSS text, or Atom ``<link href="...">`` with no ``rel`` or ``rel="alternate"``);
  ``image_url`` = ``g:image_link``. The ``g:`` spelling wins when an item has both.
* ``active`` is true when ``g:availability`` is ``in_stock`` or ``in stock`` (any case), false
  for anything else, including a missing availability.
* ``price`` = ``g:price`` as a float: ``"39.99 PLN"``, ``"39,99 PLN"``, ``"39.99"``, ``"1 499,00 PLN"``.
  The currency is not checked (the shop sells in PLN).
* ``kcal`` = ``g:custom_label_0`` and ``daily_meals`` = ``g:custom_label_1`` when they are whole
  numbers; otherwise ``kcal`` comes from an ``NNN kcal`` in the title, and ``daily_meals`` is
  unknown.

Problems
--------
* An item without ``g:id``, without a title, or repeating an id already seen earlier in the feed
  is *skipped*: it is left out of ``FeedResult.items`` and listed in ``FeedResult.skipped``.
* An item whose price cannot be read is *kept without a price*, and a ``FeedWarning`` is listed in
  ``FeedResult.warnings``. The product still exists and its name, availability and links are
  still worth sending; leaving ``price`` out of the body means User.com keeps the last price it
  had instead of receiving a wrong one. ``skipped`` therefore always means "not imported".
* A document that is not well-formed XML, declares entities (billion laughs) or references
  external entities raises ``FeedError``; nothing is expanded or fetched.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml.common import DefusedXmlException

G_NS = "http://base.google.com/ns/1.0"
ATOM_NS = "http://www.w3.org/2005/Atom"
RSS1_NS = "http://purl.org/rss/1.0/"

_ITEM_TAGS = frozenset({"item", f"{{{RSS1_NS}}}item", "entry", f"{{{ATOM_NS}}}entry"})
_IN_STOCK = "in_stock"
_KCAL_IN_TITLE = re.compile(r"(?<!\d)(\d{1,3}(?:[ \u00a0]\d{3})+|\d+)\s*kcal\b", re.IGNORECASE)
_PRICE = re.compile(r"^(?P<number>[0-9][0-9\s.,]*?)\s*(?P<currency>[A-Za-zł]{1,3}\.?)?$")
_WHOLE_NUMBER = re.compile(r"^\d+$")


class FeedError(ValueError):
    """The feed cannot be read at all (not XML, forbidden entities, no items container)."""


@dataclass(frozen=True)
class FeedItem:
    """One diet-simple from the feed."""

    custom_id: str
    name: str
    active: bool
    price: float | None = None
    kcal: int | None = None
    daily_meals: int | None = None
    product_url: str | None = None
    image_url: str | None = None

    def product_body(self) -> dict[str, Any]:
        """The User.com product body: known keys only (an unknown value is left out, not null)."""
        body: dict[str, Any] = {"custom_id": self.custom_id, "name": self.name}
        optional = {
            "price": self.price,
            "kcal": self.kcal,
            "daily_meals": self.daily_meals,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        body["active"] = self.active
        if self.product_url:
            body["product_url"] = self.product_url
        if self.image_url:
            body["image_url"] = self.image_url
        return body


@dataclass(frozen=True)
class SkippedItem:
    """An item that was not imported. ``position`` is 1-based, in document order."""

    position: int
    id: str | None
    reason: str


@dataclass(frozen=True)
class FeedWarning:
    """An item that was imported, but with a field left out (e.g. an unreadable price)."""

    position: int
    id: str
    reason: str


@dataclass
class FeedResult:
    items: list[FeedItem] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)
    warnings: list[FeedWarning] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Parsing


def parse_feed(xml: bytes) -> FeedResult:
    """Parse a Google Merchant RSS 2.0 or Atom feed into diet-simples (see the module docstring)."""
    root = _parse_xml(xml)
    result = FeedResult()
    first_seen: dict[str, int] = {}
    for position, element in enumerate(_item_elements(root), start=1):
        _read_item(element, position, first_seen, result)
    return result


def _parse_xml(xml: bytes) -> Element:
    try:
        return SafeET.fromstring(xml, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise FeedError(f"feed refused: it declares or references XML entities ({exc})") from exc
    except ParseError as exc:
        raise FeedError(f"feed is not well-formed XML: {exc}") from exc


def _item_elements(root: Element) -> list[Element]:
    return [element for element in root.iter() if element.tag in _ITEM_TAGS]


def _read_item(element: Element, position: int, first_seen: dict[str, int], result: FeedResult) -> None:
    custom_id = _text(element, _g("id"))
    name = _text(element, _g("title")) or _text(element, "title", f"{{{ATOM_NS}}}title")
    if not custom_id:
        result.skipped.append(SkippedItem(position, None, "no g:id"))
        return
    if not name:
        result.skipped.append(SkippedItem(position, custom_id, "no title (title or g:title)"))
        return
    if custom_id in first_seen:
        reason = f"duplicate g:id, first seen at position {first_seen[custom_id]}"
        result.skipped.append(SkippedItem(position, custom_id, reason))
        return
    first_seen[custom_id] = position

    raw_price = _text(element, _g("price"))
    price = parse_price(raw_price) if raw_price else None
    if raw_price and price is None:
        reason = f"price {raw_price!r} is not a number; item kept without a price"
        result.warnings.append(FeedWarning(position, custom_id, reason))

    kcal = _whole_number(_text(element, _g("custom_label_0")))
    if kcal is None:
        kcal = kcal_from_title(name)
    result.items.append(
        FeedItem(
            custom_id=custom_id,
            name=name,
            active=is_in_stock(_text(element, _g("availability"))),
            price=price,
            kcal=kcal,
            daily_meals=_whole_number(_text(element, _g("custom_label_1"))),
            product_url=_text(element, _g("link")) or _link(element),
            image_url=_text(element, _g("image_link")),
        )
    )


def _g(local: str) -> str:
    return f"{{{G_NS}}}{local}"


def _text(element: Element, *tags: str) -> str | None:
    """The stripped text of the first direct child with one of ``tags``; None when empty."""
    for tag in tags:
        child = element.find(tag)
        if child is not None:
            text = "".join(child.itertext()).strip()
            if text:
                return text
    return None


def _link(element: Element) -> str | None:
    """RSS ``<link>text</link>``, or Atom ``<link href="..."/>`` (no rel, or rel="alternate")."""
    for child in element:
        if child.tag not in ("link", f"{{{ATOM_NS}}}link"):
            continue
        href = (child.get("href") or "").strip()
        if href and child.get("rel", "alternate") == "alternate":
            return href
        text = (child.text or "").strip()
        if text:
            return text
    return None


def is_in_stock(availability: str | None) -> bool:
    """``in_stock`` / ``in stock`` (any case) is true; anything else, or nothing, is false."""
    if not availability:
        return False
    return availability.strip().lower().replace(" ", "_") == _IN_STOCK


def parse_price(raw: str) -> float | None:
    """``"39.99 PLN"``, ``"39,99 PLN"``, ``"39.99"``, ``"1 499,00 zł"`` -> float; None if unreadable."""
    match = _PRICE.match(raw.strip().replace("\xa0", " "))
    if not match:
        return None
    number = re.sub(r"\s", "", match.group("number"))
    if "," in number and "." in number:
        decimal_mark = "," if number.rfind(",") > number.rfind(".") else "."
        thousands = "." if decimal_mark == "," else ","
        number = number.replace(thousands, "").replace(decimal_mark, ".")
    else:
        number = number.replace(",", ".")
    if number.count(".") > 1:
        return None
    try:
        return float(number)
    except ValueError:
        return None


def kcal_from_title(title: str) -> int | None:
    """The ``NNN kcal`` number in a title (``"Sport Wege 2500 kcal"`` -> 2500), else None."""
    match = _KCAL_IN_TITLE.search(title)
    if not match:
        return None
    return int(re.sub(r"\s", "", match.group(1)))


def _whole_number(text: str | None) -> int | None:
    if text is None or not _WHOLE_NUMBER.match(text):
        return None
    return int(text)


# --------------------------------------------------------------------------------------------
# Diff against what was sent last time


@dataclass
class FeedDiff:
    """What a feed sync must do.

    ``to_send``: new or changed items (send ``item.product_body()``).
    ``unchanged``: items whose body hash equals the last one sent (skip).
    ``vanished``: custom ids sent before and now missing from the feed (send
    ``deactivation_body(custom_id)``; products are never deleted).
    ``next_state``: the hash per custom id to store once everything above has been sent. A
    vanished id is stored with the hash of its deactivation body, so the next diff does not report
    it again, while a reappearing item differs from that hash and is sent again.
    """

    to_send: list[FeedItem] = field(default_factory=list)
    unchanged: list[FeedItem] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    next_state: dict[str, str] = field(default_factory=dict)


def product_hash(body: dict[str, Any]) -> str:
    """Stable sha256 of a body: canonical JSON (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def deactivation_body(custom_id: str) -> dict[str, Any]:
    """The body that marks a diet-simple gone from the feed as inactive."""
    return {"custom_id": custom_id, "active": False}


def diff_feed(previous: dict[str, str], items: Iterable[FeedItem]) -> FeedDiff:
    """Compare the feed with the last-sent hash per custom id (see ``FeedDiff``)."""
    diff = FeedDiff()
    for item in items:
        digest = product_hash(item.product_body())
        diff.next_state[item.custom_id] = digest
        if previous.get(item.custom_id) == digest:
            diff.unchanged.append(item)
        else:
            diff.to_send.append(item)
    for custom_id, digest in previous.items():
        if custom_id in diff.next_state:
            continue
        gone = product_hash(deactivation_body(custom_id))
        diff.next_state[custom_id] = gone
        if digest != gone:
            diff.vanished.append(custom_id)
    return diff
