"""``lakehouse simulate``: the flags, and a run that reports exactly what it sent.

Exit codes: 0 all delivered, 1 some record failed delivery, 2 broker unreachable or topic missing,
130 interrupted (what was sent so far is still flushed, summarised and written to the
manifest).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

from tqdm import tqdm

from lakehouse.settings import ConfigError, get_settings
from simulator.faults import FAULT_KINDS, Manifest, Record, check_kinds, records
from simulator.fleet import Fleet
from simulator.messages import FORMATS
from simulator.producer import PRODUCERS, ConfluentSink, FileSink, KafkaSink, paced

DEFAULT_EVENTS = 1000
DEFAULT_RATE = 100.0  # also the simulated rate the model clock assumes under --rate 0
DEFAULT_PRODUCER = "kafka-python"


def _checked(cast, ok, rule: str):
    """An argparse type: ``cast`` the text, then insist on ``ok(value)``."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if cast is int else 'a number'}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text} must be {rule}")
        return value

    return parse


_at_least_one = _checked(int, lambda v: v >= 1, "at least 1")
_positive = _checked(float, lambda v: 0 < v < math.inf, "positive")
_non_negative = _checked(float, lambda v: 0 <= v < math.inf, "0 or more")
_fraction = _checked(float, lambda v: 0 <= v <= 1, "between 0 and 1")


def _kinds(text: str) -> tuple[str, ...]:
    try:
        return check_kinds([kind.strip() for kind in text.split(",") if kind.strip()])
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _utc(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--events", type=_at_least_one, metavar="N",
                        help=f"send N events, then stop (default {DEFAULT_EVENTS})")
    amount.add_argument("--duration", type=_positive, metavar="SECONDS",
                        help="send for SECONDS, then stop")
    amount.add_argument("--forever", action="store_true", help="send until interrupted (Ctrl-C or SIGTERM)")
    parser.add_argument("--rate", type=_non_negative, default=DEFAULT_RATE, metavar="R",
                        help="events per second; 0 = as fast as possible (default %(default)g)")
    parser.add_argument("--seed", type=int, default=1, help="same seed, same events (default %(default)s)")
    parser.add_argument("--servers", type=_at_least_one, default=500, metavar="K",
                        help="servers in the fleet (default %(default)s)")
    parser.add_argument("--format", choices=FORMATS, default="v1",
                        help="v1 (ours) or seed (the original project's message) (default %(default)s)")
    parser.add_argument("--faults", type=_fraction, default=0.0, metavar="FRACTION",
                        help="share of events turned into bad records (default 0)")
    parser.add_argument("--fault-kinds", type=_kinds, default=FAULT_KINDS, metavar="KIND,...",
                        help=f"fault kinds to inject (default all: {','.join(FAULT_KINDS)})")
    parser.add_argument("--out", type=Path, metavar="FILE.jsonl",
                        help="write one message per line to FILE instead of Kafka")
    parser.add_argument("--manifest", type=Path, metavar="FILE",
                        help="write the run manifest (JSON: counts, injected records' sha256) to FILE")
    parser.add_argument("--topic", help="Kafka topic (default $KAFKA_TOPIC, else server-live-status)")
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT",
                        help="Kafka brokers (default $KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:9092)")
    parser.add_argument("--producer", choices=tuple(PRODUCERS), default=DEFAULT_PRODUCER,
                        help="Kafka client: kafka-python (pure Python, gzip) or confluent (librdkafka, lz4; "
                             "several times faster) (default %(default)s)")
    parser.add_argument("--sim-speed", type=_positive, metavar="X",
                        help="stamp events with a simulated clock running X times faster than real time "
                             "(default: the wall clock)")
    parser.add_argument("--start", type=_utc, metavar="ISO-TIME",
                        help="start of the simulated clock (implies it, at --sim-speed 1 unless given; "
                             "default now); with it, same args give the same bytes")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _records(args: argparse.Namespace, count: int | None) -> Iterator[Record]:
    """The run's records, paced. The model clock steps 1/rate (times --sim-speed) per event."""
    simulated = args.sim_speed is not None or args.start is not None
    step = (args.sim_speed or 1.0) / (args.rate or DEFAULT_RATE)
    events = Fleet(args.servers, args.seed).events(args.start or _utc_now(), step, None if simulated else _utc_now)
    if count is not None:
        events = islice(events, count)
    return records(paced(events, args.rate, args.duration), args.format, args.faults, args.fault_kinds, args.seed)


def _producer(args: argparse.Namespace) -> str:
    return getattr(args, "producer", DEFAULT_PRODUCER)  # a Namespace built by hand may lack it


def _params(args: argparse.Namespace, count: int | None, topic: str, bootstrap: str) -> dict:
    return {
        "events": count,
        "duration": args.duration,
        "rate": args.rate,
        "seed": args.seed,
        "servers": args.servers,
        "format": args.format,
        "faults": args.faults,
        "fault_kinds": list(args.fault_kinds),
        "sink": str(args.out) if args.out else f"kafka://{bootstrap}/{topic}",
        "producer": None if args.out else _producer(args),
        "clock": "simulated" if args.sim_speed is not None or args.start is not None else "wall",
        "sim_speed": args.sim_speed,
        "start": args.start.isoformat() if args.start else None,
        "started_at": _utc_now().isoformat(),
    }


def _send(stream: Iterator[Record], sink: KafkaSink | ConfluentSink | FileSink, manifest: Manifest, count: int | None) -> bool:
    """Sends everything; returns True when interrupted by Ctrl-C."""
    with tqdm(total=count, unit=" events", unit_scale=True, disable=None, file=sys.stderr) as bar:
        try:
            for record in stream:
                manifest.add(record)
                sink.send(record)
                if record.fault != "duplicate":
                    bar.update()
        except KeyboardInterrupt:
            return True
    return False


def _summary(report: dict, elapsed: float) -> str:
    delivery = report["delivery"]
    duplicates = report["faults"]["duplicate"]
    lines = [
        (f"sent {report['records']:,} records ({report['events']:,} events + {duplicates:,} duplicates) "
         f"to {report['params']['sink']} in {elapsed:.1f}s ({report['events'] / max(elapsed, 1e-9):,.0f} events/s)"),
        f"delivered {delivery['delivered']:,}, failed {delivery['failed']:,}"
        + "".join(f"; {name} {n:,}" for name, n in delivery["errors"].items()),
        "clean records by status: " + (", ".join(f"{s} {n:,}" for s, n in report["by_status"].items()) or "none"),
    ]
    injected = {kind: n for kind, n in report["faults"].items() if n}
    if injected:
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in injected.items())
        lines.append(f"injected {sum(injected.values()):,} faults: {kinds}")
    if report["interrupted"]:
        lines.append("interrupted: stopped early")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    topic = args.topic or settings.kafka_topic
    bootstrap = args.bootstrap_servers or settings.kafka_bootstrap_servers
    forever = getattr(args, "forever", False)
    count = DEFAULT_EVENTS if args.events is None and args.duration is None and not forever else args.events
    if forever:
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: flush, summarise
    manifest = Manifest(_params(args, count, topic, bootstrap))
    try:
        sink = FileSink(args.out) if args.out else PRODUCERS[_producer(args)](bootstrap, topic)
    except ConfigError as error:  # broker unreachable, topic missing
        print(f"error: {error}", file=sys.stderr)
        return 2
    started = time.monotonic()
    interrupted = _send(_records(args, count), sink, manifest, count)
    delivery = sink.close()
    elapsed = time.monotonic() - started
    report = manifest.to_dict(delivery=delivery.to_dict(), elapsed_seconds=round(elapsed, 3), interrupted=interrupted)
    print(_summary(report, elapsed))
    if args.manifest:
        args.manifest.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"manifest: {args.manifest}")
    if interrupted:
        return 130
    return 1 if delivery.failed_count else 0
