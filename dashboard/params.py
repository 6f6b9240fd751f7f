"""Validation of the API's query parameters: bad input raises BadParam, which the API turns
into HTTP 400 with a JSON message. Values reach SQL only as parameters of selectors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

STATUSES = ("Red", "Orange", "Green")
RANGES = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(hours=24)}
RANGE_LABELS = {"15m": "Last 15 minutes", "1h": "Last hour", "24h": "Last 24 hours"}
DEFAULT_RANGE = "1h"
MAX_CUSTOM_RANGE = timedelta(days=31)
MAX_LIMIT = 500
MAX_OFFSET = 1_000_000
_TEXT = re.compile(r"^[\w .,'()/&+-]{1,100}$", re.UNICODE)
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")
_SERVER_ID = re.compile(r"^[\w.:@-]{1,200}$")


class BadParam(ValueError):
    """A query parameter is missing, malformed or out of range; the message says which."""


def reject_unknown(query, allowed) -> None:
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise BadParam(f"unknown parameter(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed)) or 'none'}")
    for name in query:
        if len(query.getlist(name)) > 1:
            raise BadParam(f"parameter {name!r} given more than once")


def _get(query, name) -> str | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if "\x00" in value or len(value) > 200:
        raise BadParam(f"{name}: invalid value")
    return value


def integer(query, name: str, *, default: int, minimum: int, maximum: int) -> int:
    raw = _get(query, name)
    if raw is None:
        return default
    if not re.fullmatch(r"\d{1,9}", raw):
        raise BadParam(f"{name} must be a whole number between {minimum} and {maximum}, got {raw!r}")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise BadParam(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def page(query, *, default_limit: int = 50) -> tuple[int, int]:
    """(limit, offset): limit 1..MAX_LIMIT, offset 0..MAX_OFFSET."""
    return (integer(query, "limit", default=default_limit, minimum=1, maximum=MAX_LIMIT),
            integer(query, "offset", default=0, minimum=0, maximum=MAX_OFFSET))


def status(query, name: str = "status") -> str | None:
    raw = _get(query, name)
    if raw is None:
        return None
    for s in STATUSES:
        if raw.lower() == s.lower():
            return s
    raise BadParam(f"{name} must be one of {', '.join(STATUSES)}, got {raw!r}")


def choice(query, name: str, choices, *, default=None):
    raw = _get(query, name)
    if raw is None:
        return default
    if raw not in choices:
        raise BadParam(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def country(query, name: str = "country") -> str | None:
    raw = _get(query, name)
    if raw is None:
        return None
    if not _COUNTRY.match(raw):
        raise BadParam(f"{name} must be a two-letter country code, got {raw!r}")
    return raw.upper()


def text(query, name: str) -> str | None:
    """A free label (city, server type): letters, digits, spaces and a little punctuation."""
    raw = _get(query, name)
    if raw is None:
        return None
    if not _TEXT.match(raw):
        raise BadParam(f"{name} has characters that are not allowed: {raw!r}")
    return raw


def server_id(value: str) -> str:
    if not _SERVER_ID.match(value or ""):
        raise BadParam(f"invalid server id {value!r}")
    return value


def _timestamp(query, name: str) -> datetime | None:
    raw = _get(query, name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace(" ", "+") if raw.count(" ") == 1 and "T" in raw else raw)
    except ValueError:
        raise BadParam(f"{name} must be an ISO 8601 timestamp such as 2025-01-31T12:00:00Z, got {raw!r}") from None
    if value.tzinfo is None:  # naive timestamps are UTC
        value = value.replace(tzinfo=UTC)
    if not datetime(2000, 1, 1, tzinfo=UTC) <= value <= datetime(2100, 1, 1, tzinfo=UTC):
        raise BadParam(f"{name} is out of range: {raw!r}")
    return value


@dataclass(frozen=True)
class TimeRange:
    since: datetime
    until: datetime
    key: str  # 15m, 1h, 24h or custom

    @property
    def label(self) -> str:
        if self.key in RANGE_LABELS:
            return RANGE_LABELS[self.key]
        return f"{self.since:%Y-%m-%d %H:%M} to {self.until:%Y-%m-%d %H:%M} UTC"

    def as_json(self) -> dict:
        return {"key": self.key, "label": self.label, "since": self.since, "until": self.until}


TIME_PARAMS = ("range", "from", "to")


def time_range(query, *, now: datetime | None = None) -> TimeRange:
    """range=15m|1h|24h (default 1h), or from=ISO[&to=ISO] (to defaults to now; at most 31 days)."""
    now = now or datetime.now(UTC)
    since, until = _timestamp(query, "from"), _timestamp(query, "to")
    key = _get(query, "range")
    if since is None and until is None:
        key = choice(query, "range", tuple(RANGES) + ("custom",), default=DEFAULT_RANGE)
        if key == "custom":
            raise BadParam("range=custom needs from (and optionally to)")
        return TimeRange(now - RANGES[key], now, key)
    if key not in (None, "custom"):
        raise BadParam("give either range or from/to, not both")
    if since is None:
        raise BadParam("to needs from")
    until = until or now
    if since >= until:
        raise BadParam("from must be before to")
    if until - since > MAX_CUSTOM_RANGE:
        raise BadParam(f"a custom range spans at most {MAX_CUSTOM_RANGE.days} days")
    return TimeRange(since, until, "custom")
