"""Time travel on versions made by the streaming pipeline: query at a version or time, history,
diff, restore (and the streams after it), maintain (and the window it keeps), CLI errors.

One lake per module (a topic and a table root on the session's stack): two streaming rounds
are recorded, table by table, and the tests below run in file order on it; each leaves the
pipeline consistent (exact accounting, gold = recomputation from silver) for the next.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from lakehouse import storage
from lakehouse import timetravel as tt
from lakehouse.settings import get_settings
from lakehouse.stack import Kafka
from lakehouse.tables import TABLES
from tests.test_pipeline import assert_accounting, assert_gold_matches_silver, rows, simulate, table, topic_records

pytestmark = pytest.mark.integration

GOLD = "gold.status_by_location"
PIPELINE = [name for name, t in TABLES.items() if t.layer in ("bronze", "silver", "gold")]  # what streaming writes


@pytest.fixture(scope="module")
def lake(stack, tmp_path_factory):
    """A fresh topic and table root for this module."""
    tmp = tmp_path_factory.mktemp("time-travel")
    with pytest.MonkeyPatch.context() as mp:
        topic = f"tt-{uuid.uuid4().hex[:8]}"
        mp.setenv("KAFKA_TOPIC", topic)
        mp.setenv("LAKEHOUSE_ROOT", str(tmp / "tables"))
        mp.setenv("LAKEHOUSE_TRIGGER_SECONDS", "1")
        mp.delenv("LAKEHOUSE_TIME_TRAVEL_DAYS", raising=False)
        settings = get_settings()
        Kafka(settings).ensure_topic(topic)
        yield settings, tmp


def record(spark, settings) -> dict:
    """Every table's current version and rows."""
    return {name: {"version": storage.version(spark, settings, name), "rows": rows(table(spark, settings, name))}
            for name in TABLES}


@pytest.fixture(scope="module")
def rounds(spark, lake):
    """Two streaming rounds; the state of every table after each."""
    from lakehouse import pipeline

    settings, tmp = lake
    simulate(settings, tmp, "--events", "300", "--faults", "0.05", "--seed", "21")
    assert pipeline.run(settings, available_now=True) == 0
    first = record(spark, settings)
    simulate(settings, tmp, "--events", "200", "--faults", "0.05", "--seed", "22")
    assert pipeline.run(settings, available_now=True) == 0
    second = record(spark, settings)
    return first, second


def cli(capsys, *argv) -> tuple[int, str, str]:
    from lakehouse.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def iso(t: dt.datetime) -> str:
    return tt.fmt_time(t)


# --- query at a version or a time -----------------------------------------------------------------

def test_query_at_a_version_equals_the_snapshot_recorded_then(spark, lake, rounds, capsys):
    from lakehouse import inspect

    settings, _ = lake
    first, second = rounds
    for name in PIPELINE:
        assert first[name]["version"] < second[name]["version"], name
        assert rows(inspect.snapshot(spark, settings, name, version=first[name]["version"])) == first[name]["rows"]
    code, out, _ = cli(capsys, "query", GOLD, "--version", first[GOLD]["version"], "--format", "json", "--limit", 0)
    assert code == 0
    served = sorted((r["country_code"], r["city"], r["status_color"], r["event_count"]) for r in json.loads(out))
    assert served == sorted((r[0], r[2], r[3], r[5]) for r in first[GOLD]["rows"])


def test_as_of_picks_the_right_version_at_its_boundaries(spark, lake, rounds, capsys):
    settings, _ = lake
    first, second = rounds
    name = "gold.server_state"
    win = tt.window(settings, name)
    v = first[name]["version"]
    at = win.times[v]
    assert tt.resolve(settings, name, as_of=at) == v
    assert tt.resolve(settings, name, as_of=at + dt.timedelta(milliseconds=1)) == v
    assert tt.resolve(settings, name, as_of=at - dt.timedelta(milliseconds=1)) == v - 1
    assert tt.resolve(settings, name, as_of=win.times[0]) == 0
    # After the last commit (but not in the future) is the latest version.
    assert tt.resolve(settings, name, as_of=win.latest_time + dt.timedelta(milliseconds=500)) == win.latest
    # The times agree with Spark's own timestampAsOf.
    spark_at = (spark.read.format("delta").option("timestampAsOf", at.strftime("%Y-%m-%d %H:%M:%S.%f"))
                .load(settings.table_path(name)))
    assert rows(spark_at) == first[name]["rows"]
    code, out, _ = cli(capsys, "query", name, "--as-of", iso(at), "--format", "json", "--limit", 0)
    assert code == 0 and len(json.loads(out)) == len(first[name]["rows"])
    code, out, _ = cli(capsys, "query", name, "--as-of", iso(at - dt.timedelta(milliseconds=1)), "--format", "json",
                       "--limit", 0)
    assert code == 0
    assert sorted(r["server_id"] for r in json.loads(out)) == sorted(
        r["server_id"] for r in spark.read.format("delta").option("versionAsOf", v - 1)
        .load(settings.table_path(name)).collect())


# --- history ----------------------------------------------------------------------------------------

def test_history_shows_versions_newest_first_with_row_metrics_and_the_window(spark, lake, rounds, capsys):
    settings, _ = lake
    first, second = rounds
    code, out, _ = cli(capsys, "history", GOLD, "--format", "json", "--limit", 0)
    assert code == 0
    data = json.loads(out)
    versions = [r["version"] for r in data["history"]]
    assert versions == sorted(versions, reverse=True) and versions[0] == second[GOLD]["version"] and versions[-1] == 0
    merges = [r for r in data["history"] if r["operation"] == "MERGE"]
    assert merges and all(r["rows_added"] is not None and r["rows_updated"] is not None for r in merges)
    # Rows added (MERGE inserts) minus rows removed over the whole history: the rows there are now.
    assert sum((r["rows_added"] or 0) - (r["rows_removed"] or 0) for r in data["history"]) == len(second[GOLD]["rows"])
    assert data["window"]["oldest_version"] == 0 and data["window"]["latest_version"] == versions[0]
    assert data["window"]["declared_days"] == 7

    code, out, _ = cli(capsys, "history", "bronze.events", "--format", "json", "--limit", 0)
    bronze = json.loads(out)["history"]
    assert {r["operation"] for r in bronze} >= {"CREATE TABLE", "WRITE"}  # the stream's appends (delta-rs's)
    assert sum(r["rows_added"] or 0 for r in bronze if r["operation"] == "WRITE") == len(
        second["bronze.events"]["rows"])

    code, out, _ = cli(capsys, "history", "silver.events", "--limit", 3)
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].split()[:3] == ["version", "timestamp", "operation"] and len(lines) == 5
    assert lines[-1].startswith("time travel: versions 0..") and "LAKEHOUSE_TIME_TRAVEL_DAYS" in lines[-1]


# --- diff -------------------------------------------------------------------------------------------

def expected_diff(name: str, before: list[tuple], after: list[tuple]):
    """Inserted, deleted, updated computed here from two recorded snapshots, by the declared keys."""
    cols = TABLES[name].column_names
    key = [cols.index(k) for k in TABLES[name].keys]

    def by_key(rs):
        return {tuple(r[i] for i in key): r for r in rs}

    a, b = by_key(before), by_key(after)
    return (sorted(b[k] for k in b.keys() - a.keys()), sorted(a[k] for k in a.keys() - b.keys()),
            sorted((a[k], b[k]) for k in a.keys() & b.keys() if a[k] != b[k]))


def actual_diff(d):
    return (rows(d.inserted), rows(d.deleted),
            sorted((tuple(r["before"]), tuple(r["after"])) for r in d.updated.collect()))


@pytest.mark.parametrize("name,method", [
    (GOLD, "change data feed"),
    ("gold.incidents", "change data feed"),
    ("silver.events", "key comparison"),
    ("bronze.events", "key comparison"),
])
def test_diff_reports_exactly_the_changed_rows(spark, lake, rounds, name, method):
    settings, _ = lake
    first, second = rounds
    v1, v2 = first[name]["version"], second[name]["version"]
    d = tt.diff(spark, settings, name, v1, v2)
    assert d.method == method
    expected = expected_diff(name, first[name]["rows"], second[name]["rows"])
    assert actual_diff(d) == expected
    if name.startswith("gold"):
        assert any(expected[2]) or any(expected[0])  # something did change
        assert actual_diff(tt.diff(spark, settings, name, v1, v2, method="keys")) == expected
    back = actual_diff(tt.diff(spark, settings, name, v2, v1))
    assert back == (expected[1], expected[0], sorted((after, before) for before, after in expected[2]))


def test_diff_command_prints_the_groups(lake, rounds, capsys):
    first, second = rounds
    v1, v2 = first[GOLD]["version"], second[GOLD]["version"]
    code, out, _ = cli(capsys, "diff", GOLD, "--from", v1, "--to", v2, "--format", "json", "--limit", 0)
    assert code == 0
    data = json.loads(out)
    inserted, deleted, updated = expected_diff(GOLD, first[GOLD]["rows"], second[GOLD]["rows"])
    assert data["counts"] == {"inserted": len(inserted), "deleted": len(deleted), "updated": len(updated)}
    assert data["method"] == "change data feed" and len(data["updated"]) == len(updated)
    assert all(u["changed"] and u["before"]["event_count"] != u["after"]["event_count"] for u in data["updated"])
    code, out, _ = cli(capsys, "diff", GOLD, "--from", v1, "--to", v2, "--limit", 2)
    assert code == 0 and out.startswith(f"{GOLD}: version {v1} -> {v2} (change data feed): ")
    assert "updated (" in out and "before" in out and "after" in out


# --- bad input ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["history", "gold.nope"], "unknown table"),
    (["history", GOLD, "--limit", "-1"], "--limit"),
    (["query", GOLD, "--version", "-1"], "0 or more"),
    (["query", GOLD, "--version", "100000"], "has no version 100000"),
    (["query", GOLD, "--as-of", "half past ten"], "cannot parse timestamp"),
    (["query", GOLD, "--as-of", "2999-01-01T00:00:00Z"], "in the future"),
    (["query", GOLD, "--as-of", "2001-01-01T00:00:00Z"], "did not exist yet"),
    (["diff", GOLD, "--from", "0", "--to", "100000"], "has no version 100000"),
    (["diff", GOLD, "--from", "yesterday", "--to", "1"], "cannot parse timestamp"),
    (["diff", "silver.nope", "--from", "0", "--to", "1"], "unknown table"),
    (["restore", GOLD, "--version", "100000", "--yes"], "has no version 100000"),
    (["restore", GOLD, "--version", "-3", "--yes"], "0 or more"),
    (["restore", GOLD, "--version", "1"], "not a terminal"),
    (["maintain", "--retain-hours", "1"], "below the declared time-travel window"),
    (["maintain", "--retain-hours", "-5"], "0 or more"),
])
def test_bad_input_exits_2_with_one_line(lake, rounds, capsys, argv, message):
    code, out, err = cli(capsys, *argv)
    assert code == 2, (argv, out, err)
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    if argv[0] in ("query", "diff", "restore") and "version" in message:
        assert "available: versions 0.." in err


def test_versions_out_of_range_give_the_available_range(lake, rounds):
    settings, _ = lake
    with pytest.raises(Exception, match=r"available: versions 0\.\.\d+ \(\d{4}-\d\d-\d\dT.*Z \.\. .*Z\)"):
        tt.resolve(settings, GOLD, version=10**6)


# --- restore ------------------------------------------------------------------------------------------

def test_restore_and_maintain_are_refused_while_the_stream_runs(lake, rounds, capsys):
    settings, _ = lake
    sleeper = subprocess.Popen(["sleep", "300"])
    pidfile = settings.home / "stream.pid"
    try:
        pidfile.write_text(str(sleeper.pid))
        for argv in (["restore", GOLD, "--version", "1", "--yes"], ["maintain"]):
            code, out, err = cli(capsys, *argv)
            assert code == 2 and f"is running (pid {sleeper.pid})" in err and err.count("\n") == 1, err
        assert tt.window(settings, GOLD).latest == rounds[1][GOLD]["version"]
    finally:
        pidfile.unlink(missing_ok=True)
        sleeper.kill()
        sleeper.wait()


def test_restore_asks_on_a_terminal_and_no_means_no(lake, rounds, capsys, monkeypatch):
    settings, _ = lake

    class Terminal:
        def isatty(self):
            return True

    asked = []
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "n")
    code, out, err = cli(capsys, "restore", "silver.events", "--version", rounds[0]["silver.events"]["version"])
    assert code == 0 and asked == ["proceed? [y/N] "] and "restore cancelled" in out
    assert "restore silver.events from version" in out and "restore silver.quarantine from version" in out
    assert tt.window(settings, "silver.events").latest == rounds[1]["silver.events"]["version"]


def test_restore_gold_then_silver_then_streaming_keeps_the_accounting(spark, lake, rounds, capsys):
    from lakehouse import pipeline

    settings, tmp = lake
    first, second = rounds
    # Gold: restored (a RESTORE version in its history), then recomputed from silver.
    code, out, err = cli(capsys, "restore", GOLD, "--version", first[GOLD]["version"], "--yes")
    assert code == 0, err
    assert "gold recomputed from silver.events" in out
    ops = [c.operation for c in tt.commits(settings, GOLD)]
    assert "RESTORE" in ops[second[GOLD]["version"] + 1:]
    assert_gold_matches_silver(spark, settings)
    assert Path(settings.checkpoint_path("refine")).exists()  # silver is unchanged: the stream goes on from its checkpoint
    # Silver: restored with its quarantine to the first round; the second round's bronze rows judged again.
    v = first["silver.events"]["version"]
    code, out, err = cli(capsys, "restore", "silver.events", "--version", v, "--yes")
    assert code == 0, err
    assert "restored silver.quarantine to version" in out
    keys_now = {r["event_key"] for r in table(spark, settings, "silver.events").select("event_key").collect()}
    assert {r[0] for r in first["silver.events"]["rows"]} <= keys_now  # the restored rows stay
    restored = [c for c in tt.commits(settings, "silver.events") if c.operation == "RESTORE"]
    assert restored and restored[-1].parameters.get("version") in (v, str(v))
    assert_accounting(spark, settings)
    assert_gold_matches_silver(spark, settings)
    assert rows(table(spark, settings, "silver.events")) == second["silver.events"]["rows"]  # same rules: same rows
    # More events, and the streams carry on from where the restores left them.
    simulate(settings, tmp, "--events", "150", "--faults", "0.05", "--seed", "23")
    assert pipeline.run(settings, available_now=True) == 0
    n_bronze, n_silver, _ = assert_accounting(spark, settings)
    assert n_bronze > len(second["bronze.events"]["rows"])
    assert_gold_matches_silver(spark, settings)
    assert table(spark, settings, GOLD).agg(F.sum("event_count")).first()[0] == n_silver


def test_restore_bronze_rereads_kafka_then_streaming_keeps_the_accounting(spark, lake, rounds, capsys):
    from lakehouse import pipeline

    settings, tmp = lake
    first, _ = rounds
    before = table(spark, settings, "bronze.events").count()
    code, out, err = cli(capsys, "restore", "bronze.events", "--version", first["bronze.events"]["version"], "--yes")
    assert code == 0, err
    assert f"re-read {before - len(first['bronze.events']['rows'])} records from Kafka" in out
    assert table(spark, settings, "bronze.events").count() == before == topic_records(settings)
    assert_accounting(spark, settings)
    simulate(settings, tmp, "--events", "120", "--seed", "24")
    assert pipeline.run(settings, available_now=True) == 0
    n_bronze, _, _ = assert_accounting(spark, settings)
    assert n_bronze > before
    assert_gold_matches_silver(spark, settings)


# --- maintain -----------------------------------------------------------------------------------------

def last_vacuum_retention_h(settings, name) -> float:
    start = [c for c in tt.commits(settings, name) if c.operation == "VACUUM START"][-1]
    return int(start.parameters["specifiedRetentionMillis"]) / 3_600_000


def test_maintain_keeps_the_declared_window(spark, lake, rounds, capsys):
    settings, _ = lake
    first, _ = rounds
    code, out, err = cli(capsys, "maintain")
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in TABLES}
    assert set(lines) == set(TABLES)
    assert all("the declared window (168 h)" in line for line in lines.values()), out
    for name in TABLES:
        assert last_vacuum_retention_h(settings, name) >= 168
        assert tt.window(settings, name).oldest == 0  # every version of this young lake is inside the window
    # The first round's versions still read as recorded then, after OPTIMIZE and VACUUM.
    for name in ("bronze.events", "silver.events", "gold.server_state", GOLD):
        assert rows(spark.read.format("delta").option("versionAsOf", first[name]["version"])
                    .load(settings.table_path(name))) == first[name]["rows"], name


def test_maintain_without_a_window_keeps_what_a_lagging_stream_needs(spark, lake, rounds, capsys, monkeypatch):
    from lakehouse import pipeline
    from lakehouse.bronze import stream as bronze_stream

    settings, tmp = lake
    # Bronze moves on alone: the refining stream (silver and gold) lags behind it.
    simulate(settings, tmp, "--events", "100", "--seed", "25")
    bronze_stream.start(spark, settings, {"availableNow": True}).awaitTermination()
    lag_from = tt.stream_source_version(settings, "refine")
    latest = storage.version(spark, settings, "bronze.events")
    assert lag_from is not None and lag_from <= latest
    lagging = {v: rows(spark.read.format("delta").option("versionAsOf", v).load(settings.table_path("bronze.events")))
               for v in range(lag_from, latest + 1)}
    # No time travel promised: VACUUM keeps only what consumers still need.
    monkeypatch.setenv("LAKEHOUSE_TIME_TRAVEL_DAYS", "0")
    settings = get_settings()
    code, out, err = cli(capsys, "maintain")
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in TABLES}
    reads_from = re.search(r"the refine stream still reads it from version (\d+)", lines["bronze.events"])
    assert reads_from and lag_from <= int(reads_from.group(1)) <= latest, lines["bronze.events"]
    assert last_vacuum_retention_h(settings, "bronze.events") >= 1  # rounded up to a whole hour, never down
    assert tt.window(settings, "bronze.events").oldest <= lag_from
    for v, expected in lagging.items():
        assert rows(spark.read.format("delta").option("versionAsOf", v)
                    .load(settings.table_path("bronze.events"))) == expected
    # Elsewhere VACUUM did remove files: those versions are refused with the readable range, and
    # the version just before the oldest readable one really cannot be read any more.
    state = tt.window(settings, "gold.server_state")
    assert last_vacuum_retention_h(settings, "gold.server_state") == 0 and state.oldest > 0
    code, out, err = cli(capsys, "query", "gold.server_state", "--version", state.oldest - 1)
    assert code == 2 and "no longer readable" in err and f"available: versions {state.oldest}.." in err
    with pytest.raises(Exception, match="FileNotFound|FILE_NOT_EXIST|FILE_NOT_FOUND|does not exist"):
        spark.read.format("delta").option("versionAsOf", state.oldest - 1).load(
            settings.table_path("gold.server_state")).collect()
    for name in TABLES:  # the current versions are intact
        win = tt.window(settings, name)
        assert win.oldest <= win.latest
        spark.read.format("delta").load(settings.table_path(name)).count()
    # The lagging refining stream finds every bronze file it needs; the pipeline stays exact.
    assert pipeline.run(settings, available_now=True) == 0
    assert_accounting(spark, settings)
    assert_gold_matches_silver(spark, settings)
