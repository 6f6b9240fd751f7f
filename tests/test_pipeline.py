"""The whole pipeline on the real stack: simulator -> Kafka -> bronze -> silver -> gold -> PostgreSQL.

Exact accounting: every Kafka record is one bronze row; every bronze row is one silver event
or one quarantine row (duplicates included, under `unique_event`); gold equals a batch
recomputation from silver; the serving tables equal gold; replay reproduces gold.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
from pyspark.sql import functions as F

from lakehouse import storage
from lakehouse.gold import transforms as G
from lakehouse.settings import get_settings
from lakehouse.stack import Kafka, writer_url
from lakehouse.tables import SILVER_QUARANTINE
from tests.conftest import SEED_DIR

pytestmark = pytest.mark.integration

# What each injected fault must become downstream.
EXPECTED_RULE = {
    "malformed_json": "json_object",
    "truncated": "json_object",
    "wrong_type": "field_types",
    "unknown_status": "status_known",
    "future_event": "event_time_not_future",
    "oversize": "message_size",
    "non_utf8": "valid_utf8",
    "duplicate": "unique_event",
}


@pytest.fixture()
def lake(stack, tmp_path, monkeypatch):
    """A fresh topic and table root for one test, on the session's stack."""
    topic = f"status-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("KAFKA_TOPIC", topic)
    monkeypatch.setenv("LAKEHOUSE_ROOT", str(tmp_path / "tables"))
    monkeypatch.setenv("LAKEHOUSE_TRIGGER_SECONDS", "1")
    settings = get_settings()
    Kafka(settings).ensure_topic(topic)
    return settings


def simulate(settings, tmp_path, *args) -> dict:
    from lakehouse.cli import main

    manifest = tmp_path / f"manifest-{uuid.uuid4().hex[:6]}.json"
    code = main(["simulate", "--rate", "0", "--topic", settings.kafka_topic, "--manifest", str(manifest),
                 "--bootstrap-servers", settings.kafka_bootstrap_servers, *args])
    assert code == 0
    return json.loads(manifest.read_text())


def produce_seed_sample(settings) -> list[bytes]:
    from kafka import KafkaProducer

    lines = (SEED_DIR / "seed_format_events.jsonl").read_bytes().splitlines()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    for line in lines:
        producer.send(settings.kafka_topic, value=line)
    producer.flush()
    producer.close()
    return lines


def topic_records(settings) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    parts = [TopicPartition(settings.kafka_topic, p) for p in consumer.partitions_for_topic(settings.kafka_topic)]
    total = sum(consumer.end_offsets(parts).values()) - sum(consumer.beginning_offsets(parts).values())
    consumer.close()
    return total


def table(spark, settings, name):
    return storage.read(spark, settings, name)


def rows(df) -> list[tuple]:
    return sorted(tuple(r) for r in df.collect())


def assert_accounting(spark, settings) -> tuple[int, int, int]:
    bronze = table(spark, settings, "bronze.events")
    silver = table(spark, settings, "silver.events")
    quarantine = table(spark, settings, "silver.quarantine")
    n_bronze, n_silver, n_quarantine = bronze.count(), silver.count(), quarantine.count()
    assert n_bronze == topic_records(settings)
    assert bronze.select("topic", "partition", "offset").distinct().count() == n_bronze
    assert n_silver + n_quarantine == n_bronze
    assert silver.select("event_key").distinct().count() == n_silver
    coords = ["partition", "offset"]
    assert silver.select(coords).union(quarantine.select(coords)).distinct().count() == n_bronze
    return n_bronze, n_silver, n_quarantine


def assert_gold_matches_silver(spark, settings) -> None:
    silver = table(spark, settings, "silver.events")
    assert rows(table(spark, settings, "gold.status_by_location")) == rows(G.status_by_location(silver))
    assert rows(table(spark, settings, "gold.status_by_minute")) == rows(G.status_by_minute(silver))
    empty_state = spark.createDataFrame([], table(spark, settings, "gold.server_state").schema)
    empty_incidents = spark.createDataFrame([], table(spark, settings, "gold.incidents").schema)
    state, incidents = G.server_timeline(silver, empty_state, empty_incidents)
    assert rows(table(spark, settings, "gold.server_state")) == rows(state)
    assert rows(table(spark, settings, "gold.incidents")) == rows(incidents)


def test_simulated_stream_with_faults_is_accounted_for_exactly(spark, lake, tmp_path):
    from lakehouse import pipeline

    manifest = simulate(lake, tmp_path, "--events", "1500", "--faults", "0.1", "--seed", "7")
    seed_lines = produce_seed_sample(lake)
    assert pipeline.run(lake, available_now=True) == 0

    n_bronze, n_silver, n_quarantine = assert_accounting(spark, lake)
    assert n_bronze == manifest["records"] + len(seed_lines)

    # Every injected record ends where it should, found by the sha256 of its bytes in bronze, at
    # the Kafka position its quarantine row gives (an oversized payload is quarantined cut).
    position = list(SILVER_QUARANTINE.keys)
    quarantine = (table(spark, lake, "silver.quarantine").select(*position, "failed_rules")
                  .join(table(spark, lake, "bronze.events").select(*position, "value"), position)
                  .select(F.sha2("value", 256).alias("sha"), "failed_rules"))
    caught = {}
    for r in quarantine.collect():
        caught.setdefault(r["sha"], []).append(r["failed_rules"])
    for record in manifest["injected"]:
        kind = record["kind"]
        if kind == "late_event":
            continue
        if kind == "missing_field":
            expected = {"required_fields", "known_format"}  # without schema_version a v1 message has no format
        else:
            expected = {EXPECTED_RULE[kind]}
        assert record["sha256"] in caught, record
        assert any(set(rules) <= expected for rules in caught[record["sha256"]]), (record, caught[record["sha256"]])
    by_kind = manifest["faults"]
    duplicates = table(spark, lake, "silver.quarantine").where(F.array_contains("failed_rules", "unique_event"))
    assert duplicates.count() == by_kind.get("duplicate", 0)

    silver = table(spark, lake, "silver.events")
    late_ids = {r["event_id"] for r in manifest["injected"] if r["kind"] == "late_event"}
    late = silver.where(F.col("event_id").isin(list(late_ids)))
    assert late.count() == len(late_ids) and late.where("NOT is_late").count() == 0
    seed = silver.where("source_format = 'seed'")
    assert seed.count() == len(seed_lines)
    assert n_silver + n_quarantine == manifest["records"] + len(seed_lines)

    assert_gold_matches_silver(spark, lake)
    gold_total = table(spark, lake, "gold.status_by_location").agg(F.sum("event_count")).first()[0]
    assert gold_total == n_silver

    with psycopg2.connect(writer_url(lake)) as conn, conn.cursor() as cur:
        cur.execute("SELECT country_code, country_name, city, status_color, severity_level, event_count, "
                    "total_estimated_resolution_time FROM status_by_location")
        served = sorted(cur.fetchall())
        cur.execute("SELECT count(*) FROM server_state")
        served_servers = cur.fetchone()[0]
    assert served == rows(table(spark, lake, "gold.status_by_location"))
    assert served_servers == table(spark, lake, "gold.server_state").count()


def test_replay_rebuilds_identical_gold_as_new_versions(spark, lake, tmp_path):
    from lakehouse import inspect, pipeline

    simulate(lake, tmp_path, "--events", "400", "--faults", "0.05", "--seed", "3")
    assert pipeline.run(lake, available_now=True) == 0
    before = {name: rows(table(spark, lake, name)) for name in
              ("silver.events", "gold.status_by_location", "gold.status_by_minute", "gold.server_state",
               "gold.incidents")}
    version_before = storage.version(spark, lake, "gold.status_by_location")

    pipeline.replay(lake)
    for name, expected in before.items():
        if name == "silver.events":
            # ingested_at and coordinates are the same facts; compare the whole row
            assert rows(table(spark, lake, name)) == expected
        else:
            assert rows(table(spark, lake, name)) == expected, name
    assert storage.version(spark, lake, "gold.status_by_location") > version_before
    old = inspect.snapshot(spark, lake, "gold.status_by_location", version=version_before)
    assert rows(old) == before["gold.status_by_location"]

    # After a replay the streams resume with new records only: accounting still holds.
    simulate(lake, tmp_path, "--events", "200", "--seed", "4")
    assert pipeline.run(lake, available_now=True) == 0
    assert_accounting(spark, lake)
    assert_gold_matches_silver(spark, lake)


def test_kill_9_mid_stream_then_restart_loses_and_duplicates_nothing(spark, lake, tmp_path):
    from lakehouse import pipeline

    manifest = simulate(lake, tmp_path, "--events", "3000", "--faults", "0.05", "--seed", "11")
    env = {**os.environ, "LAKEHOUSE_MAX_OFFSETS_PER_TRIGGER": "300"}
    proc = subprocess.Popen([sys.executable, "-m", "lakehouse.cli", "stream"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        silver_path = Path(lake.table_path("silver.events")) / "_delta_log"
        deadline = time.monotonic() + 240
        # Kill once silver has committed something: mid-run, with bronze ahead of it.
        while time.monotonic() < deadline and not list(silver_path.glob("00000000000000000001.json")):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            time.sleep(0.5)
        assert list(silver_path.glob("*.json")), "the stream made no progress"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    assert pipeline.run(lake, available_now=True) == 0
    n_bronze, _, _ = assert_accounting(spark, lake)
    assert n_bronze == manifest["records"]
    assert_gold_matches_silver(spark, lake)


def test_a_backlog_is_refined_in_batches_of_bounded_size(spark, lake, tmp_path):
    """A catch-up reads bronze in bites (``LAKEHOUSE_REFINE_MAX_BYTES_PER_TRIGGER``), not
    the whole backlog in one batch: here one bronze file per silver batch, nothing lost."""
    import dataclasses

    from deltalake import DeltaTable

    from lakehouse import pipeline

    simulate(lake, tmp_path, "--events", "600", "--seed", "3")
    settings = dataclasses.replace(lake, max_offsets_per_trigger=200, refine_max_bytes_per_trigger="1")
    assert pipeline.run(settings, available_now=True) == 0

    def writes(name: str) -> int:
        return sum(1 for c in DeltaTable(lake.table_path(name)).history() if c["operation"] == "WRITE")

    assert writes("bronze.events") >= 3 and writes("silver.events") == writes("bronze.events")
    assert_accounting(spark, lake)
    assert_gold_matches_silver(spark, lake)


def test_small_appends_are_compacted_and_a_batch_committed_before_is_not_appended_again(spark, lake, monkeypatch):
    """delta-rs appends (local disk) run no auto compaction of their own: ``append_once``
    compacts once the table holds ``COMPACT_AT_FILES`` small files. The transaction id may be
    the query id alone, as Delta's streaming sink wrote it for bronze."""
    from deltalake import DeltaTable

    from lakehouse.bronze.transforms import to_bronze

    monkeypatch.setattr(storage, "COMPACT_AT_FILES", 3)
    storage.ensure_tables(spark, lake)

    def kafka_rows(offset: int):
        return to_bronze(spark.createDataFrame(
            [(b"srv-1", f'{{"n": {offset}}}'.encode(), lake.kafka_topic, 0, offset, None, None)],
            "key binary, value binary, topic string, partition int, offset bigint, timestamp timestamp, "
            "headers array<struct<key: string, value: binary>>"))

    for batch_id in range(3):
        storage.append_once(kafka_rows(batch_id), lake, "bronze.events", "query-1", batch_id, app_id="query-1")
    target = DeltaTable(lake.table_path("bronze.events"))
    assert target.history(1)[0]["operation"] == "OPTIMIZE"
    assert len(target.file_uris()) == 1
    storage.append_once(kafka_rows(1), lake, "bronze.events", "query-1", 1, app_id="query-1")  # a re-run
    assert rows(table(spark, lake, "bronze.events").select("offset", "value_text")) == [
        (0, '{"n": 0}'), (1, '{"n": 1}'), (2, '{"n": 2}')]


def test_find_keys_answers_from_the_current_snapshot_within_the_horizon(spark, lake):
    """Silver's in-memory key lookup: files written by Spark (INT96 times) and by delta-rs
    alike, rows before the horizon left out, and a file the snapshot no longer has forgotten."""
    import datetime as dt

    import pyarrow as pa

    from lakehouse.tables import SILVER_EVENTS

    storage.ensure_tables(spark, lake)
    now = dt.datetime.now(dt.UTC)
    horizon = now - dt.timedelta(hours=48)

    def silver_rows(*keys_and_ages):
        rows = spark.createDataFrame([(k, now - dt.timedelta(hours=h)) for k, h in keys_and_ages],
                                     "event_key string, ingested_at timestamp")
        return rows.select(*[F.col(c) if c in rows.columns else F.lit(None).cast(t).alias(c)
                             for c, t, _ in SILVER_EVENTS.columns])

    def find(*keys):
        return storage.find_keys(lake, SILVER_EVENTS.name, pa.array(keys), column="event_key",
                                 time_column="ingested_at", since=horizon)

    silver_rows(("a", 1), ("old", 72)).write.format("delta").mode("append").save(lake.table_path(SILVER_EVENTS.name))
    assert find("a", "old", "c") == ["a"]
    storage.append_once(silver_rows(("c", 0)), lake, SILVER_EVENTS.name, "writer", 0)
    assert find("a", "old", "c", "d") == ["a", "c"]
    storage.overwrite(silver_rows(("c", 0)), lake, SILVER_EVENTS.name)  # a's file leaves the snapshot
    assert find("a", "old", "c") == ["c"]


def test_payload_hashes_match_what_kafka_holds(spark, lake, tmp_path):
    """Bronze keeps key and value byte for byte."""
    manifest = simulate(lake, tmp_path, "--events", "50", "--faults", "0.2", "--seed", "5",
                        "--fault-kinds", "non_utf8,oversize")
    from lakehouse import pipeline

    assert pipeline.run(lake, available_now=True) == 0
    shas = {r["sha"] for r in table(spark, lake, "bronze.events").select(F.sha2("value", 256).alias("sha")).collect()}
    assert {r["sha256"] for r in manifest["injected"]} <= shas
    assert hashlib.sha256(b"").hexdigest() not in shas


def test_query_prints_the_exact_totals_of_a_known_input_as_json(spark, lake, capsys):
    from collections import Counter

    from lakehouse import pipeline
    from lakehouse.cli import main

    lines = produce_seed_sample(lake)
    assert pipeline.run(lake, available_now=True) == 0
    counts, totals = Counter(), Counter()
    for line in lines:
        m = json.loads(line)
        color, severity = m["event_server_status_color_name_severity_level"].split("|")
        key = (m["event_country_code"], m["event_country_name"], m["event_city_name"], color, severity)
        counts[key] += 1
        totals[key] += m["event_estimated_issue_resolution_time"]
    capsys.readouterr()

    assert main(["query", "gold.status_by_location", "--format", "json", "--limit", "0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    got = {(r["country_code"], r["country_name"], r["city"], r["status_color"], r["severity_level"]):
           (r["event_count"], r["total_estimated_resolution_time"]) for r in printed}
    assert got == {k: (counts[k], totals[k]) for k in counts}


def test_query_refuses_a_bad_table_or_version_with_one_line_and_exit_2(spark, lake, capsys):
    from lakehouse import pipeline
    from lakehouse.cli import main

    produce_seed_sample(lake)
    assert pipeline.run(lake, available_now=True) == 0
    capsys.readouterr()
    assert main(["query", "gold.nope"]) == 2
    assert "unknown table 'gold.nope'" in capsys.readouterr().err
    assert main(["query", "gold.status_by_location", "--version", "999"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: gold.status_by_location has no version 999") and "available: versions 0.." in err
    assert err.count("\n") == 1
    assert main(["query", "gold.status_by_location", "--as-of", "yesterday-ish"]) == 2
    assert "cannot parse timestamp" in capsys.readouterr().err


def test_a_lake_of_the_older_separate_streams_is_refused_until_a_replay_moves_it_over(spark, lake, tmp_path):
    from lakehouse import pipeline
    from lakehouse.settings import ConfigError

    simulate(lake, tmp_path, "--events", "100", "--seed", "31")
    assert pipeline.run(lake, available_now=True) == 0
    # As the older layout left it: silver's and gold's own checkpoints, none for `refine`.
    Path(lake.checkpoint_path("refine")).rename(lake.checkpoint_path("silver"))
    Path(lake.checkpoint_path("gold")).mkdir()
    with pytest.raises(ConfigError, match="run `lakehouse replay` once"):
        pipeline.run(lake, available_now=True)
    pipeline.replay(lake)
    assert not Path(lake.checkpoint_path("silver")).exists() and not Path(lake.checkpoint_path("gold")).exists()
    simulate(lake, tmp_path, "--events", "100", "--seed", "32")
    assert pipeline.run(lake, available_now=True) == 0
    assert_accounting(spark, lake)
    assert_gold_matches_silver(spark, lake)


def test_a_malformed_refine_batch_size_is_refused_with_one_line_before_anything_starts(monkeypatch, capsys):
    from lakehouse.cli import main

    name = "LAKEHOUSE_REFINE_MAX_BYTES_PER_TRIGGER"
    for size in ("16m", "512k", "1G", "1048576", "64mb"):
        monkeypatch.setenv(name, size)
        assert get_settings().refine_max_bytes_per_trigger == size
    for size in ("16 megs", "-1m", "0", "m", "1.5g", "2 mb"):
        monkeypatch.setenv(name, size)
        assert main(["stream"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {name}={size!r} is not a size") and err.count("\n") == 1
