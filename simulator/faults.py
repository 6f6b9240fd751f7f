"""Fault injection: turn a share of the events into the bad records a real feed produces.

The pipeline downstream must survive every kind below without losing good records, so
each kind is named exactly, drawn deterministically from the run's seed, and recorded in
the run manifest with the sha256 of the exact bytes sent: a consumer can find every
injected record and check that it was quarantined, kind by kind.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from simulator.fleet import Event
from simulator.messages import dump, fields, kafka_key

FAULT_KINDS = (
    "malformed_json",  # complete but not JSON (a Python dict repr: single quotes)
    "truncated",  # a prefix of a valid message, cut at a character boundary
    "missing_field",  # one non-empty field removed
    "wrong_type",  # one field with the wrong JSON type: integers as strings, strings as arrays
    "unknown_status",  # a status colour outside SEVERITY_BY_STATUS
    "duplicate",  # the exact same bytes sent again, as an extra record right after
    "late_event",  # event time LATE_BY in the past
    "future_event",  # event time FUTURE_BY in the future
    "oversize",  # a valid-looking message padded to OVERSIZE_BYTES
    "non_utf8",  # the JSON text encoded as UTF-16 (with BOM): not valid UTF-8
)
LATE_BY = timedelta(days=30)
FUTURE_BY = timedelta(days=2)
# About 1 MB, yet under the broker's default message.max.bytes (1,048,588) with room for
# the key and record overhead, so the broker accepts it and the consumer must cope.
OVERSIZE_BYTES = 999_000
UNKNOWN_COLORS = ("Blue", "Purple", "Black", "Yellow")


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record to send, with what it was made from."""

    key: bytes
    value: bytes
    event_id: str  # the source event's id as written in its message (seed: the counter)
    status: str  # the source event's status colour
    fault: str | None = None
    detail: str | None = None  # what exactly the fault did, for the manifest

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.value).hexdigest()


def _malformed_json(event: Event, fmt: str, sequence: int, rng: random.Random) -> tuple[bytes, str]:
    return repr(fields(event, fmt, sequence)).encode("utf-8"), "Python dict repr (single quotes)"


def _truncated(event: Event, fmt: str, sequence: int, rng: random.Random) -> tuple[bytes, str]:
    text = dump(fields(event, fmt, sequence)).decode("utf-8")
    cut = rng.randrange(1, len(text))
    return text[:cut].encode("utf-8"), f"first {cut} of {len(text)} characters"


def _filled(message: dict, rng: random.Random) -> str:
    return rng.choice([name for name, value in message.items() if value != ""])


def _missing_field(event: Event, fmt: str, sequence: int, rng: random.Random) -> tuple[bytes, str]:
    message = fields(event, fmt, sequence)
    name = _filled(message, rng)
    del message[name]
    return dump(message), f"without {name}"


def _wrong_type(event: Event, fmt: str, sequence: int, rng: random.Random) -> tuple[bytes, str]:
    message = fields(event, fmt, sequence)
    name = _filled(message, rng)
    if isinstance(message[name], int):
        message[name] = str(message[name])
        return dump(message), f"{name} as a string"
    message[name] = [message[name]]
    return dump(message), f"{name} as an array"


def _unknown_status(event: Event, fmt: str, sequence: int, rng: random.Random) -> tuple[bytes, str]:
    color = rng.choice(UNKNOWN_COLORS)
    return dump(fields(replace(event, status_color=color), fmt, sequence)), f"status {color}"


def _shifted(delta: timedelta) -> Callable[[Event, str, int, random.Random], tuple[bytes, str]]:
    def shift(event: Event, fmt: str, sequence: int, rng: random.Random) -> tuple[bytes, str]:
        message = fields(replace(event, event_time=event.event_time + delta), fmt, sequence)
        return dump(message), f"event time moved by {delta.days} days"

    return shift


def _oversize(event: Event, fmt: str, sequence: int, rng: random.Random) -> tuple[bytes, str]:
    message = {**fields(event, fmt, sequence), "padding": ""}
    message["padding"] = "x" * (OVERSIZE_BYTES - len(dump(message)))
    return dump(message), f"padded to {OVERSIZE_BYTES} bytes"


def _non_utf8(event: Event, fmt: str, sequence: int, rng: random.Random) -> tuple[bytes, str]:
    text = json.dumps(fields(event, fmt, sequence), ensure_ascii=False)
    return text.encode("utf-16"), "UTF-16 with byte-order mark"


_CORRUPT = {
    "malformed_json": _malformed_json,
    "truncated": _truncated,
    "missing_field": _missing_field,
    "wrong_type": _wrong_type,
    "unknown_status": _unknown_status,
    "late_event": _shifted(-LATE_BY),
    "future_event": _shifted(FUTURE_BY),
    "oversize": _oversize,
    "non_utf8": _non_utf8,
}


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """The kinds without repeats, refusing names that are not fault kinds."""
    kinds = tuple(dict.fromkeys(kinds))
    unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown fault kind(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(FAULT_KINDS)}")
    return kinds


def records(
    events: Iterable[Event],
    fmt: str = "v1",
    fraction: float = 0.0,
    kinds: Sequence[str] = FAULT_KINDS,
    seed: int = 1,
) -> Iterator[Record]:
    """The records for ``events``: about ``fraction`` of them faulty.

    Which events are hit is a seeded coin toss per event; the kinds are dealt from a
    shuffled deck of ``kinds``, so every chosen kind gets its even share.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"the fault fraction must be between 0 and 1, got {fraction}")
    kinds = check_kinds(kinds)
    rng = random.Random(f"faults:{seed}")
    deck: list[str] = []
    for sequence, event in enumerate(events, 1):
        message = fields(event, fmt, sequence)
        clean = Record(kafka_key(event), dump(message), message["event_id"], event.status_color)
        if not (fraction and rng.random() < fraction):
            yield clean
            continue
        if not deck:
            deck = rng.sample(kinds, len(kinds))
        kind = deck.pop()
        if kind == "duplicate":
            yield clean
            yield replace(clean, fault=kind, detail="same bytes as the record before")
        else:
            value, detail = _CORRUPT[kind](event, fmt, sequence, rng)
            yield replace(clean, value=value, fault=kind, detail=detail)


class Manifest:
    """What a run sent: its parameters, counts, and the identity of every injected record."""

    def __init__(self, params: dict):
        self.params = dict(params)
        self.records = 0
        self.by_status: Counter[str] = Counter()  # clean records only
        self.by_fault: Counter[str] = Counter()
        self.injected: list[dict] = []

    def add(self, record: Record) -> None:
        self.records += 1
        if record.fault is None:
            self.by_status[record.status] += 1
            return
        self.by_fault[record.fault] += 1
        self.injected.append({
            "kind": record.fault,
            "event_id": record.event_id,
            "key": record.key.decode("utf-8"),
            "sha256": record.sha256,
            "bytes": len(record.value),
            "detail": record.detail,
        })

    @property
    def events(self) -> int:
        """Duplicates are extra records, not extra events."""
        return self.records - self.by_fault["duplicate"]

    def to_dict(self, **extra) -> dict:
        """JSON-serialisable. ``records`` counts everything sent, duplicates included:
        records == clean records + injected records == events + duplicates."""
        return {
            "params": self.params,
            "events": self.events,
            "records": self.records,
            "clean_records": sum(self.by_status.values()),
            "by_status": dict(sorted(self.by_status.items())),
            "faults": {kind: self.by_fault[kind] for kind in FAULT_KINDS},
            "injected": self.injected,
            **extra,
        }
