"""The simulator without Kafka: fleet, wire formats, fault injection, manifest, CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kafka.future import Future

from lakehouse.contracts import (
    SEED_DATETIME_FORMAT,
    SEED_FIELDS,
    SERVER_TYPES,
    SEVERITY_BY_STATUS,
    STATUS_COLORS,
    V1_FIELDS,
    V1_SCHEMA_VERSION,
)
from simulator import cli, producer
from simulator.faults import (
    FAULT_KINDS,
    FUTURE_BY,
    LATE_BY,
    OVERSIZE_BYTES,
    Manifest,
    records,
)
from simulator.fleet import DATA_CENTER_CITIES, ESTIMATE_MINUTES, Fleet, country_name
from simulator.messages import dump, encode, kafka_key
from simulator.producer import PRODUCERS, paced
from tests.conftest import SEED_DIR

SEED_SAMPLE = SEED_DIR / "seed_format_events.jsonl"
START = datetime(2026, 11, 28, 9, 0, 0, tzinfo=UTC)
JSON_TYPES = {"integer": int, "string": str}
ALLOWED_TRANSITIONS = {("Green", "Orange"), ("Green", "Red"), ("Orange", "Red"), ("Orange", "Green"), ("Red", "Green")}


def take(n: int, servers: int = 50, seed: int = 1, step: float = 1.0) -> list:
    return list(islice(Fleet(servers, seed).events(START, step), n))


def by_server(events) -> dict[str, list]:
    grouped = defaultdict(list)
    for event in events:
        grouped[event.server_id].append(event)
    return grouped


def seed_sample() -> list[str]:
    return SEED_SAMPLE.read_text(encoding="utf-8").splitlines()


def parse_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


# --- fleet -------------------------------------------------------------------------


def test_fleet_servers_have_ids_types_and_known_locations():
    fleet = Fleet(servers=500, seed=3)
    assert len(fleet.servers) == 500
    assert [s.server_id for s in fleet.servers[:2]] == ["srv-00001", "srv-00002"]
    assert len({s.server_id for s in fleet.servers}) == 500
    assert {s.server_type for s in fleet.servers} == set(SERVER_TYPES)
    for server in fleet.servers:
        assert server.city in DATA_CENTER_CITIES[server.country_code]
        assert server.country_name == country_name(server.country_code)


def test_country_and_city_names_match_the_seed_sample():
    rows = [json.loads(line) for line in seed_sample()]
    places = {(r["event_country_code"], r["event_country_name"], r["event_city_name"]) for r in rows}
    assert len(places) == 10
    for code, name, city in places:
        assert country_name(code) == name
        assert DATA_CENTER_CITIES[code][0] == city


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not():
    def run(seed: int) -> list[tuple[bytes, bytes]]:
        events = islice(Fleet(100, seed).events(START, 0.5), 1000)
        return [(r.key, r.value) for r in records(events, "v1", 0.2, FAULT_KINDS, seed)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_events_is_restartable_from_the_same_fleet():
    fleet = Fleet(20, seed=5)
    assert list(islice(fleet.events(START, 1.0), 500)) == list(islice(fleet.events(START, 1.0), 500))


def test_per_server_event_times_never_go_backwards():
    for events in by_server(take(20_000, servers=40)).values():
        times = [e.event_time for e in events]
        assert times == sorted(times)


def test_a_wall_clock_that_steps_back_never_moves_event_times_back():
    ticks = iter([START + timedelta(seconds=s) for s in (10, 5, 20, 19, 30)])
    stamps = [e.event_time for e in islice(Fleet(3).events(START, 1.0, clock=lambda: next(ticks)), 5)]
    assert [(t - START).seconds for t in stamps] == [10, 10, 20, 20, 30]


def test_simulated_clock_steps_per_event_in_utc():
    events = take(5, step=0.25)
    assert [e.event_time for e in events] == [START + timedelta(seconds=0.25 * i) for i in range(5)]
    assert all(e.event_time.tzinfo == UTC for e in events)


def test_status_changes_only_along_incident_transitions():
    seen = set()
    for events in by_server(take(50_000, servers=40)).values():
        for before, after in pairwise(events):
            if before.status_color != after.status_color:
                seen.add((before.status_color, after.status_color))
    assert seen == ALLOWED_TRANSITIONS


def test_every_incident_closes_in_time_or_is_still_open_at_the_end():
    """An incident is a run of non-Green reports. Orange lasts at most 1.5 x 7 minutes, Red
    1.5 x 10; add two report gaps of slack. Nothing stays broken longer, closed or not."""
    servers = 40
    events = take(100_000, servers=servers)
    longest = (1.5 * ESTIMATE_MINUTES["Orange"][1] + 1.5 * ESTIMATE_MINUTES["Red"][1]) * 60
    closed = still_open = 0
    for reports in by_server(events).values():
        gap = max((b.event_time - a.event_time).total_seconds() for a, b in pairwise(reports))
        opened = None
        for report in reports:
            if report.status_color != "Green" and opened is None:
                opened = report.event_time
            elif report.status_color == "Green" and opened is not None:
                assert (report.event_time - opened).total_seconds() <= longest + 2 * gap
                closed += 1
                opened = None
        if opened is not None:
            assert (reports[-1].event_time - opened).total_seconds() <= longest + 2 * gap
            still_open += 1
    assert closed > 100
    assert still_open <= servers


def test_fleet_is_mostly_green_and_severity_and_estimate_follow_status():
    events = take(50_000, servers=100)
    colors = Counter(e.status_color for e in events)
    assert 0.65 < colors["Green"] / len(events) < 0.95
    assert colors["Orange"] and colors["Red"]
    for event in events:
        assert event.severity_level == SEVERITY_BY_STATUS[event.status_color]
        low, high = ESTIMATE_MINUTES[event.status_color]
        assert low <= event.estimated_resolution_time <= high
        assert 2 <= event.estimated_resolution_time <= 10


def test_event_ids_are_unique_uuid4():
    ids = [e.event_id for e in take(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 for i in ids)


# --- wire formats ------------------------------------------------------------------


def test_v1_message_has_exactly_the_contract_fields_and_json_types():
    for event in take(200):
        message = json.loads(encode(event, "v1", 1))
        assert list(message) == list(V1_FIELDS)
        for name, json_type in V1_FIELDS.items():
            assert type(message[name]) is JSON_TYPES[json_type], name
        assert message["schema_version"] == V1_SCHEMA_VERSION
        assert message["event_id"] == event.event_id
        assert message["status_color"] in STATUS_COLORS
        assert message["severity_level"] == SEVERITY_BY_STATUS[message["status_color"]]
        assert kafka_key(event) == message["server_id"].encode()


def test_v1_event_time_is_utc_iso_with_milliseconds_and_z():
    event = take(1)[0]
    moment = event.event_time.replace(microsecond=123_456)
    message = json.loads(encode(replace(event, event_time=moment), "v1", 1))
    assert message["event_time"] == "2026-11-28T09:00:00.123Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", message["event_time"])


def test_seed_message_matches_the_sample_file_field_for_field():
    sample = json.loads(seed_sample()[0])
    lines = [encode(event, "seed", i) for i, event in enumerate(take(300), 1)]
    for i, line in enumerate(lines, 1):
        message = json.loads(line)
        assert list(message) == list(sample) == list(SEED_FIELDS)
        for name in SEED_FIELDS:
            assert type(message[name]) is type(sample[name]), name
            if name.startswith("event_server_") and "_other_param_" in name:
                assert message[name] == sample[name] == ""
        color, severity = message["event_server_status_color_name_severity_level"].split("|")
        assert SEVERITY_BY_STATUS[color] == severity
        assert message["event_id"] == str(i)
        assert 2 <= message["event_estimated_issue_resolution_time"] <= 10
        assert message["event_country_name"] == country_name(message["event_country_code"])
        # written the way the sample file is: default json.dumps separators, UTF-8 kept
        assert dump(message) == line
    assert json.loads(lines[3])["event_datetime"] == "2026-11-28 09:00:03"
    datetime.strptime(json.loads(lines[0])["event_datetime"], SEED_DATETIME_FORMAT)


def test_seed_sample_is_itself_written_the_way_we_write():
    for line in seed_sample():
        assert dump(json.loads(line)).decode("utf-8") == line


# --- faults ------------------------------------------------------------------------


def faulty(kind: str, fmt: str = "v1", n: int = 20) -> tuple[list, list]:
    """(clean records, records with every event hit by ``kind``) for the same events."""
    events = take(n)
    return list(records(events, fmt)), list(records(events, fmt, 1.0, [kind]))


def test_malformed_json_is_utf8_but_not_json():
    for record in faulty("malformed_json")[1]:
        with pytest.raises(json.JSONDecodeError):
            json.loads(record.value.decode("utf-8"))


def test_truncated_is_a_strict_prefix_that_does_not_parse():
    for clean, record in zip(*faulty("truncated"), strict=True):
        assert clean.value.startswith(record.value) and len(record.value) < len(clean.value)
        with pytest.raises(json.JSONDecodeError):
            json.loads(record.value.decode("utf-8"))


def test_missing_field_drops_exactly_one_field():
    for record in faulty("missing_field")[1]:
        message = json.loads(record.value)
        assert set(message) < set(V1_FIELDS) and len(message) == len(V1_FIELDS) - 1


def test_wrong_type_changes_exactly_one_field_type():
    for clean, record in zip(*faulty("wrong_type"), strict=True):
        good, bad = json.loads(clean.value), json.loads(record.value)
        assert list(bad) == list(good)
        changed = [name for name in good if type(good[name]) is not type(bad[name])]
        assert len(changed) == 1 and changed[0] in record.detail


def test_unknown_status_is_outside_the_known_colors():
    for record in faulty("unknown_status")[1]:
        assert json.loads(record.value)["status_color"] not in STATUS_COLORS
    for record in faulty("unknown_status", "seed")[1]:
        color = json.loads(record.value)["event_server_status_color_name_severity_level"].split("|")[0]
        assert color not in STATUS_COLORS


def test_duplicate_sends_the_same_bytes_again_as_an_extra_record():
    clean, hit = faulty("duplicate", n=10)
    assert len(hit) == 2 * len(clean)
    for original, copy in zip(hit[::2], hit[1::2], strict=True):
        assert original.fault is None and copy.fault == "duplicate"
        assert copy.value == original.value and copy.key == original.key


@pytest.mark.parametrize(("kind", "shift"), [("late_event", -LATE_BY), ("future_event", FUTURE_BY)])
def test_late_and_future_events_move_only_the_event_time(kind, shift):
    for clean, record in zip(*faulty(kind), strict=True):
        good, bad = json.loads(clean.value), json.loads(record.value)
        moved = datetime.fromisoformat(bad["event_time"]) - datetime.fromisoformat(good["event_time"])
        assert moved == shift
        del bad["event_time"], good["event_time"]
        assert bad == good


def test_oversize_is_a_valid_looking_message_of_about_one_megabyte():
    for record in faulty("oversize", n=3)[1]:
        assert len(record.value) == OVERSIZE_BYTES and 990_000 <= OVERSIZE_BYTES < 1_000_000
        message = json.loads(record.value)
        assert set(V1_FIELDS) < set(message)


def test_non_utf8_does_not_decode_as_utf8():
    for record in faulty("non_utf8")[1]:
        with pytest.raises(UnicodeDecodeError):
            record.value.decode("utf-8")


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_every_kind_also_works_on_the_seed_format(kind):
    clean, hit = faulty(kind, "seed", n=10)
    injected = [r for r in hit if r.fault]
    assert len(injected) == len(clean) and {r.fault for r in injected} == {kind}
    if kind != "duplicate":
        assert all(r.value != c.value for r, c in zip(hit, clean, strict=True))


def test_fault_fraction_is_spread_evenly_over_the_chosen_kinds():
    stream = list(records(take(10_000), "v1", 0.1, FAULT_KINDS, seed=4))
    kinds = Counter(r.fault for r in stream if r.fault)
    assert set(kinds) == set(FAULT_KINDS)
    assert max(kinds.values()) - min(kinds.values()) <= 1
    assert 850 < sum(kinds.values()) < 1_150


def test_a_kind_can_be_selected_alone():
    stream = list(records(take(1_000), "v1", 0.3, ["late_event"]))
    assert {r.fault for r in stream} == {None, "late_event"}


def test_no_message_contains_a_newline_so_jsonl_keeps_one_per_line():
    assert not [r for r in records(take(1_000), "v1", 0.5) if b"\n" in r.value]
    assert not [r for r in records(take(1_000), "seed", 0.5) if b"\n" in r.value]


def test_manifest_counts_add_up_and_identify_each_injected_record():
    manifest = Manifest({"seed": 1})
    stream = list(records(take(5_000), "v1", 0.2))
    for record in stream:
        manifest.add(record)
    report = json.loads(json.dumps(manifest.to_dict()))
    assert report["records"] == len(stream) == report["events"] + report["faults"]["duplicate"]
    assert report["events"] == 5_000
    assert report["records"] == report["clean_records"] + len(report["injected"])
    assert sum(report["by_status"].values()) == report["clean_records"]
    assert sum(report["faults"].values()) == len(report["injected"])
    sent = {(r.fault, r.sha256, r.key.decode(), r.event_id) for r in stream if r.fault}
    assert {(i["kind"], i["sha256"], i["key"], i["event_id"]) for i in report["injected"]} == sent


# --- delivery and CLI --------------------------------------------------------------


def test_pacing_holds_1000_events_per_second():
    started = time.monotonic()
    assert len(list(paced(range(600), rate=1000))) == 600
    assert 0.55 < time.monotonic() - started < 0.9


def test_pacing_stops_after_the_duration():
    started = time.monotonic()
    sent = len(list(paced(iter(int, 1), rate=500, duration=0.3)))
    assert 0.25 < time.monotonic() - started < 0.6
    assert 130 <= sent <= 170


def test_cli_file_sink_is_reproducible_with_a_simulated_clock(tmp_path):
    def run(name: str) -> tuple[bytes, dict]:
        out, manifest = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.json"
        args = parse_args("--events", "2000", "--rate", "0", "--seed", "9", "--faults", "0.1", "--servers", "50",
                          "--start", "2026-11-28T09:00:00Z", "--sim-speed", "60",
                          "--out", str(out), "--manifest", str(manifest))
        assert cli.run(args) == 0
        return out.read_bytes(), json.loads(manifest.read_text())

    first, report = run("a")
    second, _ = run("b")
    assert first == second
    lines = first.split(b"\n")[:-1]
    assert len(lines) == report["records"] == report["delivery"]["delivered"]
    assert report["events"] == 2000 and report["delivery"]["failed"] == 0
    sent = Counter(hashlib.sha256(line).hexdigest() for line in lines)
    injected = Counter(i["sha256"] for i in report["injected"])
    assert all(sent[sha] >= n for sha, n in injected.items())
    # sim-speed 60 at the nominal 100 events/s: 0.6 simulated seconds per event
    clean = [json.loads(line) for line in lines if hashlib.sha256(line).hexdigest() not in injected]
    offsets = {datetime.fromisoformat(m["event_time"]) - datetime.fromisoformat("2026-11-28T09:00:00Z") for m in clean}
    assert all(o % timedelta(milliseconds=600) == timedelta(0) for o in offsets)
    assert max(offsets) <= timedelta(seconds=0.6 * 1999)


def test_cli_defaults():
    args = parse_args()
    assert (args.events, args.duration, args.rate, args.seed, args.servers) == (None, None, 100.0, 1, 500)
    assert (args.format, args.faults, args.fault_kinds, args.sim_speed) == ("v1", 0.0, FAULT_KINDS, None)
    assert args.producer == "kafka-python"
    assert parse_args("--producer", "confluent").producer == "confluent"


@pytest.mark.parametrize("argv", [
    ("--events", "10", "--duration", "5"),
    ("--fault-kinds", "oversize,bogus"),
    ("--faults", "1.5"),
    ("--rate", "-1"),
    ("--format", "v2"),
    ("--producer", "librdkafka"),
])
def test_cli_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(*argv)
    assert exit_info.value.code == 2


class FakeProducer:
    """Stands in for KafkaProducer: every 10th send raises at once, every 3rd future fails
    and, when ``stall`` is set, the final flush gives up with the futures still open."""

    stall = False

    def __init__(self, **config):
        self.config = config
        self.futures: list[Future] = []
        self.calls = 0
        self.closed_with = None

    def partitions_for(self, topic):
        return {0, 1, 2}

    def send(self, topic, key, value):
        self.calls += 1
        if self.calls % 10 == 0:
            raise MessageSizeTooLargeError("too large")
        self.futures.append(Future())
        return self.futures[-1]

    def flush(self, timeout=None):
        if self.stall:
            raise KafkaTimeoutError("Timeout waiting for future")
        for i, future in enumerate(self.futures):
            if i % 3 == 0:
                future.failure(KafkaTimeoutError("expired"))
            else:
                future.success(None)

    def close(self, timeout=None):
        self.closed_with = timeout


def run_with_fake_kafka(monkeypatch, tmp_path, stall: bool) -> tuple[int, dict, FakeProducer]:
    made = []

    def make(**config):
        made.append(FakeProducer(**config))
        return made[-1]

    monkeypatch.setattr(FakeProducer, "stall", stall)
    monkeypatch.setattr(producer, "KafkaProducer", make)
    manifest = tmp_path / "manifest.json"
    code = cli.run(parse_args("--events", "100", "--rate", "0", "--manifest", str(manifest)))
    return code, json.loads(manifest.read_text()), made[0]


def test_kafka_delivery_failures_are_counted_from_errbacks_and_exit_1(monkeypatch, tmp_path):
    code, report, fake = run_with_fake_kafka(monkeypatch, tmp_path, stall=False)
    assert code == 1
    delivery = report["delivery"]
    assert (delivery["delivered"], delivery["failed"]) == (60, 40)
    assert delivery["errors"] == {"MessageSizeTooLargeError": 10, "KafkaTimeoutError": 30}
    assert len(delivery["failed_records"]) == 40 and all(len(r["sha256"]) == 64 for r in delivery["failed_records"])
    assert fake.config["acks"] == "all" and fake.config["enable_idempotence"] is True
    assert fake.config["max_request_size"] > OVERSIZE_BYTES


def test_records_still_unconfirmed_when_the_flush_gives_up_count_as_failed(monkeypatch, tmp_path):
    code, report, fake = run_with_fake_kafka(monkeypatch, tmp_path, stall=True)
    assert code == 1
    assert (report["delivery"]["delivered"], report["delivery"]["failed"]) == (0, 100)
    assert fake.closed_with == 0


class FakeConfluentProducer:
    """Stands in for confluent_kafka.Producer: the 5th produce meets a full queue once, every
    10th is refused at once, every 3rd delivery report is a failure and, when ``stall`` is
    set, the final flush serves no report at all."""

    stall = False

    def __init__(self, config: dict):
        self.config = config
        self.reports: list = []
        self.calls = self.polls = 0
        self.purged = self.closed = False

    def list_topics(self, topic, timeout=None):
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions={0: None, 1: None})})

    def produce(self, topic, value, key, on_delivery):
        self.calls += 1
        if self.calls == 5:
            raise BufferError("Local: Queue full")
        if self.calls % 10 == 0:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.reports.append(on_delivery)

    def poll(self, timeout=None):
        self.polls += 1
        return 0

    def flush(self, timeout=None):
        if self.stall:
            return len(self.reports)
        for i, report in enumerate(self.reports):
            report(KafkaError(KafkaError._MSG_TIMED_OUT) if i % 3 == 0 else None, None)
        self.reports = []
        return 0

    def purge(self):
        self.purged = True

    def close(self):
        self.closed = True


def run_with_fake_confluent(monkeypatch, tmp_path, stall: bool) -> tuple[int, dict, FakeConfluentProducer]:
    made = []

    def make(config):
        made.append(FakeConfluentProducer(config))
        return made[-1]

    monkeypatch.setattr(FakeConfluentProducer, "stall", stall)
    monkeypatch.setattr(producer, "ConfluentProducer", make)
    manifest = tmp_path / "manifest.json"
    code = cli.run(parse_args("--events", "100", "--rate", "0", "--producer", "confluent", "--manifest", str(manifest)))
    return code, json.loads(manifest.read_text()), made[0]


def test_confluent_delivery_failures_are_counted_from_delivery_reports_and_exit_1(monkeypatch, tmp_path):
    code, report, fake = run_with_fake_confluent(monkeypatch, tmp_path, stall=False)
    assert code == 1
    assert report["params"]["producer"] == "confluent"
    delivery = report["delivery"]
    assert (delivery["delivered"], delivery["failed"]) == (60, 40)  # the full queue was retried, not lost
    assert delivery["errors"] == {"MSG_SIZE_TOO_LARGE": 10, "_MSG_TIMED_OUT": 30}
    assert len(delivery["failed_records"]) == 40 and all(len(r["sha256"]) == 64 for r in delivery["failed_records"])
    assert {r["error"] for r in delivery["failed_records"]} == {"Broker: Message size too large",
                                                               "Local: Message timed out"}
    assert fake.config["acks"] == "all" and fake.config["enable.idempotence"] is True
    assert fake.config["message.max.bytes"] > OVERSIZE_BYTES
    assert fake.config["compression.type"] == "lz4"
    assert fake.polls > 90  # after each accepted send and the full queue: served while sending
    assert fake.closed and not fake.purged


def test_confluent_records_still_unconfirmed_when_the_flush_gives_up_count_as_failed(monkeypatch, tmp_path):
    code, report, fake = run_with_fake_confluent(monkeypatch, tmp_path, stall=True)
    assert code == 1
    assert (report["delivery"]["delivered"], report["delivery"]["failed"]) == (0, 100)
    assert report["delivery"]["errors"] == {"MSG_SIZE_TOO_LARGE": 10, "FlushTimeout": 90}
    assert fake.purged and fake.closed


@pytest.mark.parametrize("producer_name", list(PRODUCERS))
def test_unreachable_broker_exits_2_with_one_clear_line(monkeypatch, capsys, producer_name):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the run: nothing listens there
    monkeypatch.setattr(producer, "BOOTSTRAP_TIMEOUT_MS", 500)
    started = time.monotonic()
    assert cli.run(parse_args("--events", "5", "--bootstrap-servers", f"127.0.0.1:{port}",
                              "--producer", producer_name)) == 2
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [(f"error: Kafka broker at 127.0.0.1:{port} is unreachable; start it with "
                    "`lakehouse stack up` or set KAFKA_BOOTSTRAP_SERVERS")]
