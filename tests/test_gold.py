"""Gold transforms on tiny inline silver events: aggregates, server timeline, incremental = rebuild."""

from __future__ import annotations

import datetime as dt
from functools import reduce

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakehouse.gold import transforms as T
from lakehouse.tables import (
    GOLD_INCIDENTS,
    GOLD_SERVER_STATE,
    GOLD_STATUS_BY_LOCATION,
    GOLD_STATUS_BY_MINUTE,
    SILVER_EVENTS,
)

T0 = dt.datetime(2026, 11, 28, 12, 0, 0, tzinfo=dt.UTC)
SEVERITY = {"Green": "Severity 3", "Orange": "Severity 2", "Red": "Severity 1"}
PARIS = {"country_code": "FR", "country_name": "France", "city": "Paris"}
BERLIN = {"country_code": "DE", "country_name": "Germany", "city": "Berlin"}


def t(seconds: float) -> dt.datetime:
    """Event time: `seconds` after 2026-11-28 12:00:00 UTC."""
    return T0 + dt.timedelta(seconds=seconds)


def incident_id(server_id: str, seconds: float) -> str:
    return f"{server_id}@{t(seconds).strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z"


def silver(spark, *events: dict, first_offset: int = 0) -> DataFrame:
    """Silver event rows from a few dicts: `at` is seconds after T0; everything else has a default.

    Defaults: a v1 Green event of server srv-a (Web Servers, Paris), on time, resolution
    time 0, offset = position in the call (+ first_offset); severity follows the colour.
    """
    rows = []
    for i, given in enumerate(events):
        e = {"server_id": "srv-a", "server_type": "Web Servers", **PARIS, "status_color": "Green",
             "estimated_resolution_time": 0, "at": 0, "source_format": "v1", "is_late": False,
             "topic": "status", "partition": 0, "offset": first_offset + i, **given}
        e.setdefault("severity_level", SEVERITY[e["status_color"]])
        e.setdefault("event_id", f"{e['server_id'] or 'seed'}-{e['at']}")
        e.setdefault("event_key", ("v1:" if e["source_format"] == "v1" else "seed:") + e["event_id"])
        e["event_time"] = t(e.pop("at"))
        e.setdefault("ingested_at", e["event_time"] + dt.timedelta(seconds=1))
        rows.append(tuple(e[c] for c in SILVER_EVENTS.column_names))
    return spark.createDataFrame(rows, SILVER_EVENTS.ddl)


def rows(spark, table, *values: tuple) -> DataFrame:
    return spark.createDataFrame(list(values), table.ddl)


def empty(spark, table) -> DataFrame:
    return spark.createDataFrame([], table.ddl)


def assert_same(actual: DataFrame, expected: DataFrame) -> None:
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def timeline_from_empty(spark, events: DataFrame):
    return T.server_timeline(events, empty(spark, GOLD_SERVER_STATE), empty(spark, GOLD_INCIDENTS))


def upsert(old: DataFrame, new: DataFrame, key: str) -> DataFrame:
    """What `MERGE ... WHEN MATCHED UPDATE ALL WHEN NOT MATCHED INSERT ALL` leaves in the table."""
    return old.join(new.select(key), key, "left_anti").unionByName(new)


def merged_location(parts: list[DataFrame]) -> DataFrame:
    """status_by_location rows of several batches, added as gold.stream's MERGE adds them."""
    return (reduce(DataFrame.unionByName, parts).groupBy(*GOLD_STATUS_BY_LOCATION.keys)
            .agg(F.sum("event_count").alias("event_count"),
                 F.sum("total_estimated_resolution_time").alias("total_estimated_resolution_time"))
            .select(*GOLD_STATUS_BY_LOCATION.column_names))


def merged_minute(parts: list[DataFrame]) -> DataFrame:
    """status_by_minute rows of several batches, combined as gold.stream's MERGE combines them."""
    return (reduce(DataFrame.unionByName, parts).groupBy(*GOLD_STATUS_BY_MINUTE.keys, "window_end")
            .agg(F.sum("event_count").alias("event_count"),
                 F.sum("total_estimated_resolution_time").alias("total_estimated_resolution_time"),
                 F.max("max_estimated_resolution_time").alias("max_estimated_resolution_time"))
            .withColumn("avg_estimated_resolution_time",
                        F.col("total_estimated_resolution_time") / F.col("event_count"))
            .select(*GOLD_STATUS_BY_MINUTE.column_names))


# --- aggregates ---------------------------------------------------------------------------------


def test_status_by_location_counts_and_sums_resolution_time_per_place_and_status(spark):
    events = silver(
        spark,
        {"status_color": "Red", "estimated_resolution_time": 10, "at": 1},
        {"status_color": "Red", "estimated_resolution_time": 20, "at": 2, "server_id": "srv-b"},
        {"status_color": "Green", "at": 3},
        {"status_color": "Red", "estimated_resolution_time": 5, "at": 4, "server_id": "srv-c", **BERLIN},
        # late and seed-format events still count in the aggregates
        {"status_color": "Red", "estimated_resolution_time": 1, "at": 5, "is_late": True},
        {"status_color": "Orange", "estimated_resolution_time": 7, "at": 6, "server_id": None,
         "source_format": "seed", "city": "Lyon"},
    )
    expected = rows(spark, GOLD_STATUS_BY_LOCATION,
                    ("FR", "France", "Paris", "Red", "Severity 1", 3, 31),
                    ("FR", "France", "Paris", "Green", "Severity 3", 1, 0),
                    ("FR", "France", "Lyon", "Orange", "Severity 2", 1, 7),
                    ("DE", "Germany", "Berlin", "Red", "Severity 1", 1, 5))
    actual = T.status_by_location(events)
    assert actual.columns == GOLD_STATUS_BY_LOCATION.column_names
    assert_same(actual, expected)


def test_status_by_minute_aggregates_one_minute_windows_by_status_and_server_type(spark):
    events = silver(
        spark,
        {"status_color": "Red", "estimated_resolution_time": 10, "at": 5},
        {"status_color": "Red", "estimated_resolution_time": 21, "at": 59.999, "server_id": "srv-b"},
        {"status_color": "Red", "estimated_resolution_time": 4, "at": 60},  # next window
        {"status_color": "Green", "estimated_resolution_time": 0, "at": 30},
        {"status_color": "Red", "estimated_resolution_time": 6, "at": 10, "server_type": "Database Servers"},
    )
    expected = rows(spark, GOLD_STATUS_BY_MINUTE,
                    (t(0), t(60), "Red", "Web Servers", 2, 31, 15.5, 21),
                    (t(60), t(120), "Red", "Web Servers", 1, 4, 4.0, 4),
                    (t(0), t(60), "Green", "Web Servers", 1, 0, 0.0, 0),
                    (t(0), t(60), "Red", "Database Servers", 1, 6, 6.0, 6))
    actual = T.status_by_minute(events)
    assert actual.columns == GOLD_STATUS_BY_MINUTE.column_names
    assert_same(actual, expected)


# --- server timeline ------------------------------------------------------------------------------


def test_server_timeline_from_empty_state_builds_incidents_and_latest_state(spark):
    db_berlin = {"server_id": "srv-b", "server_type": "Database Servers", **BERLIN}
    events = silver(
        spark,
        # srv-a: Green -> Red -> Orange -> Green, given out of event-time order (rows and offsets)
        {"status_color": "Orange", "at": 20, "estimated_resolution_time": 8},
        {"status_color": "Green", "at": 40.25, "estimated_resolution_time": 0, "event_id": "a-last"},
        {"status_color": "Green", "at": 0},
        {"status_color": "Red", "at": 10.75, "estimated_resolution_time": 30},
        # srv-b: Orange, then Red and stays: an open incident; Red since its first Red event
        {**db_berlin, "status_color": "Red", "at": 25, "estimated_resolution_time": 12},
        {**db_berlin, "status_color": "Orange", "at": 5, "estimated_resolution_time": 9},
        {**db_berlin, "status_color": "Red", "at": 35, "estimated_resolution_time": 11, "event_id": "b-last"},
        # srv-c: a late Red (newer than its Green) is ignored
        {"server_id": "srv-c", "status_color": "Green", "at": 2, "event_id": "c-last"},
        {"server_id": "srv-c", "status_color": "Red", "at": 50, "is_late": True},
        # a seed-format event has no server: ignored
        {"server_id": None, "source_format": "seed", "status_color": "Red", "at": 45},
    )
    new_state, incidents = timeline_from_empty(spark, events)

    assert_same(new_state, rows(
        spark, GOLD_SERVER_STATE,
        ("srv-a", "Web Servers", "FR", "France", "Paris", "Green", "Severity 3", t(40.25), t(40.25), "a-last", 0),
        ("srv-b", "Database Servers", "DE", "Germany", "Berlin", "Red", "Severity 1", t(25), t(35), "b-last", 11),
        ("srv-c", "Web Servers", "FR", "France", "Paris", "Green", "Severity 3", t(2), t(2), "c-last", 0)))
    assert_same(incidents, rows(
        spark, GOLD_INCIDENTS,
        # 10.75 -> 40.25 is 29.5 s: whole seconds of the difference, 29
        (incident_id("srv-a", 10.75), "srv-a", "Web Servers", "FR", "France", "Paris",
         t(10.75), t(40.25), 29, "Severity 1", False),
        (incident_id("srv-b", 5), "srv-b", "Database Servers", "DE", "Germany", "Berlin",
         t(5), None, None, "Severity 1", True)))


def test_an_event_older_than_the_servers_last_known_event_changes_nothing(spark):
    state = rows(spark, GOLD_SERVER_STATE,
                 ("srv-a", "Web Servers", "FR", "France", "Paris", "Green", "Severity 3", t(0), t(20), "a-20", 0))
    old_red = silver(spark, {"status_color": "Red", "at": 15, "estimated_resolution_time": 30})
    new_state, incidents = T.server_timeline(old_red, state, empty(spark, GOLD_INCIDENTS))
    assert new_state.count() == 0 and incidents.count() == 0


# --- incremental = rebuild ------------------------------------------------------------------------

BATCH_1 = [
    # srv-x: an incident opens (Red) and is still open at the end of the batch
    {"server_id": "srv-x", "status_color": "Green", "at": 0},
    {"server_id": "srv-x", "status_color": "Red", "at": 10, "estimated_resolution_time": 5},
    {"server_id": "srv-x", "status_color": "Red", "at": 20, "estimated_resolution_time": 6},
    # srv-y: an incident opens and closes within the batch
    {"server_id": "srv-y", "status_color": "Red", "at": 5, "estimated_resolution_time": 9, **BERLIN},
    {"server_id": "srv-y", "status_color": "Green", "at": 25, **BERLIN},
    # srv-z: opens an incident and is not seen again
    {"server_id": "srv-z", "status_color": "Green", "at": 1, "server_type": "Mail Servers"},
    {"server_id": "srv-z", "status_color": "Red", "at": 3, "server_type": "Mail Servers",
     "estimated_resolution_time": 40},
    {"server_id": None, "source_format": "seed", "status_color": "Red", "at": 7, "estimated_resolution_time": 2},
]
BATCH_2 = [
    # srv-x: older than its last batch-1 event: ignored (it would open a second incident if not).
    # Red between Reds, so the rebuild, which does keep it, sees the same history.
    {"server_id": "srv-x", "status_color": "Red", "at": 15, "estimated_resolution_time": 99},
    # srv-x: the open incident eases to Orange (its worst stays Severity 1), closes, and a new one opens
    {"server_id": "srv-x", "status_color": "Orange", "at": 30, "estimated_resolution_time": 20},
    {"server_id": "srv-x", "status_color": "Green", "at": 40},
    {"server_id": "srv-x", "status_color": "Red", "at": 50, "estimated_resolution_time": 15},
    # srv-y: stays Green (its status_since carries over)
    {"server_id": "srv-y", "status_color": "Green", "at": 35, **BERLIN},
    {"server_id": "srv-y", "status_color": "Red", "at": 45, "is_late": True, **BERLIN},
    # srv-z: another event at the very time of its last one: the later arrival wins, as in the rebuild
    {"server_id": "srv-z", "status_color": "Red", "at": 3, "server_type": "Mail Servers",
     "estimated_resolution_time": 41, "event_id": "srv-z-3-again"},
    # srv-w: first seen in batch 2
    {"server_id": "srv-w", "status_color": "Orange", "at": 45, "estimated_resolution_time": 3},
    {"server_id": None, "source_format": "seed", "status_color": "Green", "at": 8},
]


def test_incremental_batches_give_the_same_state_and_incidents_as_a_rebuild(spark):
    batch_1 = silver(spark, *BATCH_1)
    batch_2 = silver(spark, *BATCH_2, first_offset=len(BATCH_1))

    state_1, incidents_1 = timeline_from_empty(spark, batch_1)
    state_1, incidents_1 = state_1.localCheckpoint(), incidents_1.localCheckpoint()
    state_2, incidents_2 = T.server_timeline(batch_2, state_1, incidents_1.where("is_open"))
    final_state = upsert(state_1, state_2, "server_id")
    final_incidents = upsert(incidents_1, incidents_2, "incident_id").localCheckpoint()

    rebuilt_state, rebuilt_incidents = timeline_from_empty(spark, batch_1.unionByName(batch_2))
    assert_same(final_state, rebuilt_state)
    assert_same(final_incidents, rebuilt_incidents)
    # and what both say: srv-x's first incident keeps its batch-1 id, start and worst severity
    assert_same(final_incidents, rows(
        spark, GOLD_INCIDENTS,
        (incident_id("srv-x", 10), "srv-x", "Web Servers", "FR", "France", "Paris",
         t(10), t(40), 30, "Severity 1", False),
        (incident_id("srv-x", 50), "srv-x", "Web Servers", "FR", "France", "Paris",
         t(50), None, None, "Severity 1", True),
        (incident_id("srv-y", 5), "srv-y", "Web Servers", "DE", "Germany", "Berlin",
         t(5), t(25), 20, "Severity 1", False),
        (incident_id("srv-z", 3), "srv-z", "Mail Servers", "FR", "France", "Paris",
         t(3), None, None, "Severity 1", True),
        (incident_id("srv-w", 45), "srv-w", "Web Servers", "FR", "France", "Paris",
         t(45), None, None, "Severity 2", True)))


def test_aggregates_of_two_batches_added_together_equal_the_aggregate_of_all_events(spark):
    batch_1 = silver(spark, *BATCH_1)
    batch_2 = silver(spark, *BATCH_2, first_offset=len(BATCH_1))
    everything = batch_1.unionByName(batch_2)

    assert_same(merged_location([T.status_by_location(batch_1), T.status_by_location(batch_2)]),
                T.status_by_location(everything))
    assert_same(merged_minute([T.status_by_minute(batch_1), T.status_by_minute(batch_2)]),
                T.status_by_minute(everything))


@pytest.mark.parametrize("engine", ["delta-rs", "spark"])
def test_two_batches_merged_into_the_gold_tables_equal_the_tables_rebuilt_from_all_events(
        spark, tmp_path, monkeypatch, engine):
    """The stream's upserts add up to what replay writes, averages included: delta-rs's MERGE
    (a lake on a local disk) and Spark's (elsewhere, e.g. HDFS: forced here)."""
    from lakehouse import storage
    from lakehouse.gold import stream as refine
    from lakehouse.settings import get_settings

    if engine == "spark":
        monkeypatch.setattr(storage, "is_local", lambda location: False)
    monkeypatch.setenv("LAKEHOUSE_ROOT", str(tmp_path / "tables"))
    settings = get_settings()
    storage.ensure_tables(spark, settings)
    batch_1 = silver(spark, *BATCH_1).localCheckpoint()
    batch_2 = silver(spark, *BATCH_2, first_offset=len(BATCH_1)).localCheckpoint()
    refine.process_batch(batch_1, 0, settings, "writer")
    refine.process_batch(batch_2, 1, settings, "writer")

    everything = batch_1.unionByName(batch_2)
    state, incidents = timeline_from_empty(spark, everything)
    for table, expected in ((GOLD_STATUS_BY_LOCATION, T.status_by_location(everything)),
                            (GOLD_STATUS_BY_MINUTE, T.status_by_minute(everything)),
                            (GOLD_SERVER_STATE, state), (GOLD_INCIDENTS, incidents)):
        assert_same(storage.read(spark, settings, table.name), expected)


def test_a_batch_run_again_after_silver_committed_gives_gold_the_same_rows(spark, tmp_path, monkeypatch):
    """A crash between silver's appends and gold's MERGEs: the re-run batch skips the appends
    (Delta transaction ids) and still hands gold exactly the rows silver committed; a crash
    after gold's MERGEs: the re-run changes no gold table."""
    import json

    from lakehouse import storage
    from lakehouse.bronze.transforms import to_bronze
    from lakehouse.gold import stream as refine
    from lakehouse.settings import get_settings
    from lakehouse.silver import stream as silver_stream

    monkeypatch.setenv("LAKEHOUSE_ROOT", str(tmp_path / "tables"))
    settings = get_settings()
    storage.ensure_tables(spark, settings)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)

    def event(i: int, color: str) -> bytes:
        return json.dumps({"schema_version": 1, "event_id": f"e-{i}", "server_id": f"srv-{i % 3}",
                           "event_time": (now - dt.timedelta(seconds=60 - i)).isoformat() + "Z",
                           "server_type": "Web Servers", **PARIS, "status_color": color,
                           "severity_level": SEVERITY[color], "estimated_resolution_time": i}).encode()

    payloads = [event(i, ("Green", "Red", "Orange")[i % 3]) for i in range(12)] + [event(4, "Orange"), b"{oops"]
    kafka = spark.createDataFrame([(b"k", p, "status", 0, i, now) for i, p in enumerate(payloads)],
                                  "key binary, value binary, topic string, partition int, offset long, timestamp timestamp")
    bronze = to_bronze(kafka.selectExpr("*", "CAST(NULL AS ARRAY<STRUCT<key: STRING, value: BINARY>>) AS headers"))
    bronze = bronze.withColumn("ingested_at", F.col("kafka_timestamp")).localCheckpoint()

    assert not storage.may_hold(settings, SILVER_EVENTS.name, "writer", 0)  # a first run reads no coordinates
    first, figures = silver_stream.process_batch(bronze, 0, settings, "writer")  # crash here: gold never ran
    assert storage.may_hold(settings, SILVER_EVENTS.name, "writer", 0)  # the re-run leaves its own rows out
    assert (figures["rows_out"], figures["quarantined"], figures["duplicates_dropped"]) == (12, 1, 1)
    again, figures = silver_stream.process_batch(bronze, 0, settings, "writer")  # the re-run
    refine.process_batch(again, 0, settings, "writer")
    gold = [GOLD_STATUS_BY_LOCATION.name, "gold.status_by_minute", "gold.incidents", GOLD_SERVER_STATE.name]
    versions = {name: storage.version(spark, settings, name) for name in gold}
    refine.process_batch(again, 0, settings, "writer")  # a crash after gold committed: its re-run writes nothing
    assert {name: storage.version(spark, settings, name) for name in gold} == versions

    silver_rows = storage.read(spark, settings, SILVER_EVENTS.name)
    assert silver_rows.count() == 12 and storage.read(spark, settings, "silver.quarantine").count() == 2
    assert_df_equality(again, first, ignore_row_order=True)
    assert_df_equality(storage.read(spark, settings, GOLD_STATUS_BY_LOCATION.name),
                       T.status_by_location(silver_rows), ignore_row_order=True, ignore_nullable=True)
    assert storage.read(spark, settings, GOLD_SERVER_STATE.name).count() == 3

    # A later batch with a copy of an event silver holds (looked up in memory, not re-run) and a new one.
    later = kafka.limit(0).union(spark.createDataFrame(
        [(b"k", payloads[3], "status", 0, 100, now), (b"k", event(20, "Red"), "status", 0, 101, now)], kafka.schema))
    later = to_bronze(later.selectExpr("*", "CAST(NULL AS ARRAY<STRUCT<key: STRING, value: BINARY>>) AS headers"))
    new, figures = silver_stream.process_batch(later.withColumn("ingested_at", F.col("kafka_timestamp")), 1, settings, "writer")
    assert (figures["rows_out"], figures["duplicates_dropped"]) == (1, 1)
    assert [r["event_id"] for r in new.collect()] == ["e-20"]
