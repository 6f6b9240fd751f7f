"""Events as wire bytes, in our v1 format or the original project's seed format.

The field names and formats come from ``lakehouse.contracts``, which the silver layer
parses with, so both sides agree by construction. Messages are UTF-8 JSON objects written
the way the seed's sample file is (``json.dumps`` default separators, non-ASCII kept).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from lakehouse.contracts import SEED_DATETIME_FORMAT, SEED_FIELDS, V1_SCHEMA_VERSION
from simulator.fleet import Event

FORMATS = ("v1", "seed")


def iso_millis(moment: datetime) -> str:
    """``2026-11-28T09:00:01.123Z``: UTC, milliseconds, a trailing Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def v1_fields(event: Event) -> dict:
    return {
        "schema_version": V1_SCHEMA_VERSION,
        "event_id": event.event_id,
        "server_id": event.server_id,
        "event_time": iso_millis(event.event_time),
        "server_type": event.server_type,
        "country_code": event.country_code,
        "country_name": event.country_name,
        "city": event.city,
        "status_color": event.status_color,
        "severity_level": event.severity_level,
        "estimated_resolution_time": event.estimated_resolution_time,
    }


def seed_fields(event: Event, sequence: int) -> dict:
    """The seed message. Its ``event_datetime`` is the event time in UTC, written without a
    zone (the seed wrote local time); its ``event_id`` is the run's counter, "1", "2", ..."""
    values = {
        "event_server_status_color_name_severity_level": f"{event.status_color}|{event.severity_level}",
        "event_datetime": event.event_time.astimezone(UTC).strftime(SEED_DATETIME_FORMAT),
        "event_server_type": event.server_type,
        "event_country_code": event.country_code,
        "event_country_name": event.country_name,
        "event_city_name": event.city,
        "event_estimated_issue_resolution_time": event.estimated_resolution_time,
        "event_id": str(sequence),
    }
    return {name: values.get(name, "") for name in SEED_FIELDS}  # other_param fields stay ""


def fields(event: Event, fmt: str, sequence: int) -> dict:
    """The message as a dict; ``sequence`` (1-based position in the run) only matters for seed."""
    if fmt == "v1":
        return v1_fields(event)
    if fmt == "seed":
        return seed_fields(event, sequence)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def dump(message: dict) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode("utf-8")


def encode(event: Event, fmt: str, sequence: int) -> bytes:
    return dump(fields(event, fmt, sequence))


def kafka_key(event: Event) -> bytes:
    """Records are keyed by server, so one server's events stay in order on one partition
    (the seed format carries no server_id, but is keyed the same way)."""
    return event.server_id.encode("utf-8")
