"""Silver transforms on tiny inline data: parsing both formats, rules, quarantine, de-duplication."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from lakehouse.bronze.transforms import to_bronze
from lakehouse.rules import RULES, Rule, validate_rules
from lakehouse.silver import transforms as T
from tests.conftest import SEED_DIR

INGESTED = dt.datetime(2026, 11, 28, 12, 0, 0)


def v1(**overrides) -> bytes:
    event = {"schema_version": 1, "event_id": "e-1", "server_id": "srv-00001", "event_time": "2026-11-28T11:59:00.250Z",
             "server_type": "Web Servers", "country_code": "FR", "country_name": "France", "city": "Paris",
             "status_color": "Red", "severity_level": "Severity 1", "estimated_resolution_time": 7}
    event.update(overrides)
    return json.dumps({k: v for k, v in event.items() if v is not ...}).encode()


def bronze(spark, payloads: list[bytes]):
    rows = [(b"k", p, "status", 0, i, INGESTED) for i, p in enumerate(payloads)]
    kafka = spark.createDataFrame(rows, "key binary, value binary, topic string, partition int, offset long, "
                                        "timestamp timestamp")
    kafka = kafka.selectExpr("*", "CAST(NULL AS ARRAY<STRUCT<key: STRING, value: BINARY>>) AS headers")
    return to_bronze(kafka).withColumn("ingested_at", F.col("kafka_timestamp"))


def judged(spark, payloads):
    return T.judge(T.parse(bronze(spark, payloads))).orderBy("offset")


def failed(spark, payload: bytes) -> list[str]:
    return judged(spark, [payload]).first()["failed_rules"]


def test_v1_message_parses_into_the_clean_schema(spark):
    row = T.valid_events(judged(spark, [v1()])).first()
    assert row["event_key"] == "v1:e-1"
    assert (row["server_id"], row["status_color"], row["severity_level"]) == ("srv-00001", "Red", "Severity 1")
    assert row["event_time"] == dt.datetime(2026, 11, 28, 11, 59, 0, 250000)
    assert row["source_format"] == "v1" and row["is_late"] is False


def test_seed_sample_file_parses_unchanged_in_meaning(spark):
    lines = (SEED_DIR / "seed_format_events.jsonl").read_bytes().splitlines()
    events = T.valid_events(judged(spark, lines)).orderBy("offset").collect()
    assert len(events) == len(lines)
    for line, row in zip(lines, events):
        original = json.loads(line)
        color, severity = original["event_server_status_color_name_severity_level"].split("|")
        assert (row["status_color"], row["severity_level"]) == (color, severity)
        assert row["city"] == original["event_city_name"] and row["server_type"] == original["event_server_type"]
        assert row["estimated_resolution_time"] == original["event_estimated_issue_resolution_time"]
        assert row["event_time"].strftime("%Y-%m-%d %H:%M:%S") == original["event_datetime"]
        assert row["event_id"] == original["event_id"] and row["server_id"] is None
        assert row["source_format"] == "seed"


def test_seed_identity_does_not_rest_on_the_reused_counter(spark):
    line = (SEED_DIR / "seed_format_events.jsonl").read_bytes().splitlines()[0]
    other_run = line.replace(b'"Canberra"', b'"Sydney"')  # same event_id "1", a different event
    first, copies = T.first_per_event(T.number_copies(judged(spark, [line, other_run, line])))
    assert first.count() == 2 and copies.count() == 1


BAD_RECORDS = [
    (b"{'not': 'json'}", "json_object"),
    (v1()[:40], "json_object"),
    (json.dumps({"hello": 1}).encode(), "known_format"),
    (v1(city=...), "required_fields"),
    (v1(estimated_resolution_time="7"), "field_types"),
    (v1(city=["Paris"]), "field_types"),
    (v1(schema_version=2), "schema_version"),
    (v1(event_time="yesterday"), "event_time_valid"),
    (v1(event_time="2026-11-30T12:00:00.000Z"), "event_time_not_future"),
    (v1(status_color="Blue"), "status_known"),
    (v1(severity_level="Severity 3"), "severity_matches_status"),
    (v1(server_type="Toasters"), "server_type_known"),
    (v1(country_code="fra"), "country_code_format"),
    (v1(estimated_resolution_time=-1), "resolution_time_range"),
    (json.dumps({"x": "é"}).encode("utf-16"), "valid_utf8"),
    (v1(city="x" * 70_000), "message_size"),
]


def test_each_rule_fires_on_its_bad_record_and_only_there(spark):
    rows = judged(spark, [p for p, _ in BAD_RECORDS]).select("offset", "failed_rules").collect()
    assert [r["failed_rules"] for r in rows] == [[rule] for _, rule in BAD_RECORDS]
    assert {rule for _, rule in BAD_RECORDS} == {r.name for r in RULES}


def test_a_good_record_fails_no_rule(spark):
    assert failed(spark, v1()) == []


def test_missing_fields_are_named_in_the_reason(spark):
    reason = judged(spark, [v1(city=..., server_id=...)]).first()["reason"]
    assert reason == "required fields are missing: server_id, city"


def test_quarantine_keeps_the_raw_payload_and_coordinates(spark):
    bad = b"{'not': 'json'}"
    rows = T.quarantined(judged(spark, [v1(), bad])).collect()
    assert len(rows) == 1
    assert bytes(rows[0]["value"]) == bad and rows[0]["offset"] == 1
    assert rows[0]["failed_rules"] == ["json_object"]


def test_quarantine_text_is_bronzes_text_decoded_again_from_the_payload(spark):
    """Silver never reads bronze's value_text: the quarantine decodes the same text from value."""
    payloads = [b"\xff\xfe{not utf-8", "{\"é\": ".encode() + b"\xc3"]
    rows = bronze(spark, payloads)
    quarantined = T.quarantined(T.judge(T.parse(rows.select(*T.SOURCE_COLUMNS)))).select("offset", "value_text")
    assert_df_equality(quarantined, rows.select("offset", "value_text"), ignore_row_order=True)


def test_late_events_enter_silver_flagged(spark):
    rows = T.valid_events(judged(spark, [v1(event_time="2026-10-01T00:00:00.000Z")])).collect()
    assert len(rows) == 1 and rows[0]["is_late"] is True


def test_duplicates_keep_the_first_copy_and_quarantine_the_rest(spark):
    b = bronze(spark, [v1(), v1(event_id="e-2"), v1()])
    first, copies = T.first_per_event(T.number_copies(T.judge(T.parse(b))))
    assert sorted(r["offset"] for r in first.collect()) == [0, 1]
    dup = T.as_duplicates(T.with_payload(copies, b)).collect()
    assert [(r["offset"], r["failed_rules"], bytes(r["value"])) for r in dup] == [(2, ["unique_event"], v1())]


def test_split_quarantines_every_copy_and_bad_record_with_its_payload(spark):
    from lakehouse.settings import get_settings
    from lakehouse.silver.stream import split

    payloads = [v1(), v1(event_id="e-2"), v1(event_id="e-2"), b"{not json"]
    def known(keys):  # e-1 is already in silver
        return keys.where("event_key = 'v1:e-1'")

    rows = split(bronze(spark, payloads), get_settings(), known)
    assert rows.known
    assert [r["event_key"] for r in rows.events.collect()] == ["v1:e-2"]
    quarantined = sorted(rows.quarantine.collect(), key=lambda r: r["offset"])
    assert [(r["offset"], r["failed_rules"]) for r in quarantined] == [
        (0, ["unique_event"]), (2, ["unique_event"]), (3, ["json_object"])]
    assert [bytes(r["value"]) for r in quarantined] == [payloads[0], payloads[2], payloads[3]]
    assert [r["value_text"] for r in quarantined] == [payloads[0].decode(), payloads[2].decode(), payloads[3].decode()]


def test_split_with_no_known_event_keeps_the_first_copy_of_each_and_numbers_every_record(spark):
    from lakehouse.settings import get_settings
    from lakehouse.silver.stream import split

    payloads = [v1(), v1(event_id="e-2"), v1(event_id="e-2"), b"{not json"]
    rows = split(bronze(spark, payloads), get_settings(), lambda keys: None)  # silver holds none of them
    assert not rows.known
    assert sorted(r["event_key"] for r in rows.events.collect()) == ["v1:e-1", "v1:e-2"]
    assert sorted((r["offset"], r["copy"]) for r in rows.numbered.collect()) == [(0, 1), (1, 1), (2, 2), (3, None)]
    quarantined = sorted(rows.quarantine.collect(), key=lambda r: r["offset"])
    assert [(r["offset"], r["failed_rules"], bytes(r["value"])) for r in quarantined] == [
        (2, ["unique_event"], payloads[2]), (3, ["json_object"], payloads[3])]


def test_split_quarantines_an_oversized_record_cut_to_the_size_limit(spark):
    """Bronze keeps it whole, at the Kafka position the quarantine row gives."""
    from lakehouse.rules import MAX_MESSAGE_BYTES
    from lakehouse.settings import get_settings
    from lakehouse.silver.stream import split

    huge = v1(event_id="e-2", city="x" * 70_000)
    rows = split(bronze(spark, [v1(), huge, b"{not json"]), get_settings(), None)
    quarantined = sorted(rows.quarantine.collect(), key=lambda r: r["offset"])
    assert [(r["offset"], r["failed_rules"]) for r in quarantined] == [(1, ["message_size"]), (2, ["json_object"])]
    assert bytes(quarantined[0]["value"]) == huge[:MAX_MESSAGE_BYTES]
    assert quarantined[0]["value_text"] == huge.decode()[:T.QUARANTINE_TEXT_LIMIT]
    assert bytes(quarantined[1]["value"]) == b"{not json"


def test_a_json_null_field_is_present_with_the_wrong_type(spark):
    assert failed(spark, v1(city=None)) == ["field_types"]


def test_valid_events_match_the_declared_silver_schema(spark):
    from lakehouse.tables import SILVER_EVENTS

    expected = spark.createDataFrame([], SILVER_EVENTS.ddl)
    actual = T.valid_events(judged(spark, [v1()])).limit(0)
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_a_broken_rule_declaration_is_rejected_with_its_name():
    with pytest.raises(ValueError, match="rule bad_policy"):
        validate_rules((*RULES, Rule("bad_policy", 4, "true", "x", policy="explode")))


def test_the_sample_kept_with_the_tests_is_the_original_projects():
    original = SEED_DIR.parents[2] / "shared" / "seed" / "seed_format_events.jsonl"
    if not original.exists():
        pytest.skip("../shared/seed is not beside this clone")
    assert (SEED_DIR / "seed_format_events.jsonl").read_bytes() == original.read_bytes()
