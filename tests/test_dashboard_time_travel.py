"""The dashboard's time-travel page on real Delta tables: written here by Spark, read by the
dashboard with delta-rs (no JVM per request, no pyspark import), checked against Spark.

Versions of gold.status_by_location (Change Data Feed), silver.events (compared by keys) and
bronze.events (binary and nested columns) are made by the test's Spark session in a private
LAKEHOUSE_ROOT; PostgreSQL is not involved.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_dashboard import REPO, configure_django

pytestmark = pytest.mark.integration

LOCATION_COLS = ("country_code STRING, country_name STRING, city STRING, status_color STRING, severity_level STRING, "
                 "event_count BIGINT, total_estimated_resolution_time BIGINT")


def _utc(value):
    """Spark's naive local datetimes as the dashboard's ISO strings; bytes as text."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, list):
        return [_utc(v) for v in value]
    if isinstance(value, dict):
        return {k: _utc(v) for k, v in value.items()}
    return value


def spark_rows(spark, settings, name, version) -> list[dict]:
    df = spark.read.format("delta").option("versionAsOf", version).load(settings.table_path(name))
    return [{k: _utc(v) for k, v in r.asDict(recursive=True).items()} for r in df.collect()]


def canon(rows) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)


@pytest.fixture(scope="module")
def lake(spark, stack, tmp_path_factory):
    """Versions written by Spark; returns (settings, {table: [versions made]})."""
    from delta.tables import DeltaTable

    from lakehouse import storage
    from lakehouse.settings import get_settings

    root = tmp_path_factory.mktemp("tt-dashboard") / "tables"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAKEHOUSE_ROOT", str(root))
        settings = get_settings()
        for name in ("bronze.events", "silver.events", "gold.status_by_location"):  # only what we use: faster
            table = storage.TABLES[name]
            props = {**storage.PROPERTIES, **(storage.CHANGE_FEED if table.layer == "gold" else {})}
            part = f"PARTITIONED BY ({', '.join(table.partition_by)})" if table.partition_by else ""
            spark.sql(f"CREATE TABLE delta.`{settings.table_path(name)}` ({table.ddl}) USING DELTA {part} "
                      "TBLPROPERTIES (" + ", ".join(f"'{k}' = '{v}'" for k, v in props.items()) + ")")

        gold = settings.table_path("gold.status_by_location")

        def merge(rows):
            src = spark.createDataFrame(rows, LOCATION_COLS)
            on = " AND ".join(f"t.{k} = s.{k}" for k in storage.TABLES["gold.status_by_location"].keys)
            (DeltaTable.forPath(spark, gold).alias("t").merge(src.alias("s"), on)
             .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())

        merge([("FR", "France", "Paris", "Red", "Severity 1", 3, 30),
               ("DE", "Germany", "Berlin", "Green", "Severity 3", 4, 12),
               ("US", "United States", "Austin", "Orange", "Severity 2", 1, 5)])  # v1
        merge([("FR", "France", "Paris", "Red", "Severity 1", 5, 50),
               ("JP", "Japan", "Tokyo", "Red", "Severity 1", 2, 7)])  # v2: FR updated, JP inserted
        DeltaTable.forPath(spark, gold).delete("city = 'Berlin'")  # v3
        merge([("JP", "Japan", "Tokyo", "Red", "Severity 1", 9, 70),
               ("DE", "Germany", "Berlin", "Green", "Severity 3", 4, 12)])  # v4: JP updated, DE back

        silver = settings.table_path("silver.events")
        schema = spark.read.format("delta").load(silver).schema
        t0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)

        def event(i, color="Green"):
            return (f"k{i}", f"e{i}", f"srv-{i}", "Web Servers", "FR", "France", "Paris", color,
                    {"Green": "Severity 3", "Red": "Severity 1"}[color], 5, t0 + dt.timedelta(minutes=i), "v1",
                    False, "t", 0, i, t0)

        spark.createDataFrame([event(1), event(2)], schema).write.format("delta").mode("append").save(silver)  # v1
        spark.createDataFrame([event(3), event(4)], schema).write.format("delta").mode("append").save(silver)  # v2
        DeltaTable.forPath(spark, silver).update("event_key = 'k2'", {"status_color": "'Red'"})  # v3
        DeltaTable.forPath(spark, silver).delete("event_key = 'k3'")  # v4

        bronze = settings.table_path("bronze.events")
        bschema = spark.read.format("delta").load(bronze).schema
        spark.createDataFrame([
            (b"srv-1", b'{"a": 1}', '{"a": 1}', "t", 0, 0, t0, [("trace", b"\x00\x01")], t0, t0.date()),
            (b"srv-2", b"\xff\xfe not utf8", "\ufffd\ufffd not utf8", "t", 1, 0, t0, [], t0, t0.date()),
        ], bschema).write.format("delta").mode("append").save(bronze)  # v1
        yield settings, {"gold.status_by_location": [0, 1, 2, 3, 4], "silver.events": [0, 1, 2, 3, 4],
                         "bronze.events": [0, 1]}


@pytest.fixture(scope="module")
def client(lake):
    configure_django()
    from django.test import Client

    return Client()


def get_json(client, url, status=200):
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code, response.content[:400])
    assert response["Content-Type"] == "application/json"
    return response.json()


def test_tables_are_readable_by_delta_rs_with_their_protocol(client, lake):
    tables = {t["table"]: t for t in get_json(client, "/api/time-travel/tables")["tables"]}
    gold = tables["gold.status_by_location"]
    assert gold["exists"] and gold["readable"] and gold["version"] == 4 and gold["change_data_feed"] is True
    assert gold["protocol"]["min_reader_version"] == 1 and "changeDataFeed" in gold["protocol"]["writer_features"]
    silver = tables["silver.events"]
    assert silver["readable"] and silver["version"] == 4 and silver["change_data_feed"] is False
    assert tables["gold.incidents"]["exists"] is False  # not created in this root


def test_rows_at_every_version_equal_what_spark_reads(client, lake, spark):
    settings, versions = lake
    for name, made in versions.items():
        for v in made:
            page = get_json(client, f"/api/time-travel/rows?table={name}&version={v}&limit=500")
            assert page["version"] == v and page["total"] == len(page["rows"])
            assert canon(page["rows"]) == canon(spark_rows(spark, settings, name, v)), (name, v)
    latest = get_json(client, "/api/time-travel/rows?table=gold.status_by_location")
    assert latest["version"] == 4 and latest["latest_version"] == 4


def test_binary_and_nested_columns_are_shown_as_text(client, lake):
    rows = get_json(client, "/api/time-travel/rows?table=bronze.events")["rows"]
    assert [r["value_text"] for r in rows][0] == '{"a": 1}'
    assert rows[0]["headers"] == [{"key": "trace", "value": "\x00\x01"}]
    assert rows[1]["value"].endswith("not utf8") and rows[1]["headers"] == []


def test_rows_are_paginated_in_key_order(client, lake):
    pages = [get_json(client, f"/api/time-travel/rows?table=gold.status_by_location&version=2&limit=1&offset={i}")
             for i in range(4)]
    assert [p["total"] for p in pages] == [4] * 4
    assert [p["rows"][0]["country_code"] for p in pages] == ["DE", "FR", "JP", "US"]
    assert pages[0]["limit"] == 1 and pages[3]["offset"] == 3
    assert get_json(client, "/api/time-travel/rows?table=gold.status_by_location&version=2&offset=10")["rows"] == []


def test_as_of_picks_the_version_committed_at_or_before(client, lake):
    from lakehouse import timetravel as tt

    settings, _ = lake
    win = tt.window(settings, "gold.status_by_location")

    def at(when: dt.datetime) -> int:
        iso = when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        return get_json(client, f"/api/time-travel/rows?table=gold.status_by_location&as_of={iso}")["version"]

    assert at(win.times[2]) == 2
    assert at(win.times[2] - dt.timedelta(milliseconds=1)) == 1
    assert at(win.times[4] + dt.timedelta(seconds=1)) == 4
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "future" in get_json(client, f"/api/time-travel/rows?table=gold.status_by_location&as_of={future}",
                                status=400)["error"]
    early = get_json(client, "/api/time-travel/rows?table=gold.status_by_location&as_of=2001-01-01T00:00:00Z",
                     status=400)["error"]
    assert "did not exist yet" in early and "versions 0..4" in early


def test_history_newest_first_with_metrics_and_window(client, lake, spark):
    from lakehouse import timetravel as tt

    settings, _ = lake
    h = get_json(client, "/api/time-travel/history?table=gold.status_by_location")
    assert [r["version"] for r in h["rows"]] == [4, 3, 2, 1, 0] and h["total"] == 5
    ops = {r["version"]: r for r in h["rows"]}
    assert ops[2]["operation"] == "MERGE" and (ops[2]["rows_added"], ops[2]["rows_updated"]) == (1, 1)
    assert ops[3]["operation"] == "DELETE" and ops[3]["rows_removed"] == 1
    assert all(r["readable"] for r in h["rows"])
    assert h["window"]["oldest_version"] == 0 and h["window"]["latest_version"] == 4
    # The same versions, times and figures as `lakehouse history` (Spark's DeltaTable.history).
    cli_rows, _ = tt.history(spark, settings, "gold.status_by_location")
    assert [{k: r[k] for k in ("version", "timestamp", "operation", "rows_added", "rows_removed", "rows_updated")}
            for r in cli_rows] == [
        {k: r[k] for k in ("version", "timestamp", "operation", "rows_added", "rows_removed", "rows_updated")}
        for r in h["rows"]]
    page = get_json(client, "/api/time-travel/history?table=gold.status_by_location&limit=2&offset=2")
    assert [r["version"] for r in page["rows"]] == [2, 1]


def _as_sets(inserted, deleted, updated) -> dict:
    return {"inserted": canon(inserted), "deleted": canon(deleted),
            "updated": sorted(json.dumps([b, a], sort_keys=True, default=str) for b, a in updated)}


def _spark_side(d) -> dict:
    def plain(df):
        return [{k: _utc(v) for k, v in r.asDict(recursive=True).items()} for r in df.collect()]

    updated = [(_utc(r["before"]), _utc(r["after"])) for r in plain(d.updated)]
    return _as_sets(plain(d.inserted), plain(d.deleted), updated)


@pytest.mark.parametrize("name,pairs", [
    ("gold.status_by_location", [(0, 4), (1, 2), (1, 4), (2, 3), (4, 1)]),
    ("silver.events", [(1, 2), (2, 4), (4, 0)]),
])
def test_diff_matches_the_cli_diff(client, lake, spark, name, pairs):
    from lakehouse import timetravel as tt

    settings, _ = lake
    for v1, v2 in pairs:
        page = get_json(client, f"/api/time-travel/diff?table={name}&from={v1}&to={v2}&limit=500")
        assert page["method"] == ("change data feed" if name.startswith("gold") else "key comparison")
        cli = tt.diff(spark, settings, name, v1, v2)
        assert cli.method == page["method"]
        assert _as_sets(page["inserted"], page["deleted"], [(u["before"], u["after"]) for u in page["updated"]]) \
            == _spark_side(cli), (name, v1, v2)


def test_diff_of_gold_aggregates_per_key(client, lake):
    d = get_json(client, "/api/time-travel/diff?table=gold.status_by_location&from=1&to=4")
    # JP inserted at 2 then updated at 4: one insert with its final values. DE deleted at 3 and
    # back at 4 with the same values: no change. FR updated once.
    assert d["counts"] == {"inserted": 1, "deleted": 0, "updated": 1}
    assert d["inserted"][0]["city"] == "Tokyo" and d["inserted"][0]["event_count"] == 9
    assert d["updated"][0]["key"]["city"] == "Paris" and d["updated"][0]["changed"] == [
        "event_count", "total_estimated_resolution_time"]
    assert (d["updated"][0]["before"]["event_count"], d["updated"][0]["after"]["event_count"]) == (3, 5)
    back = get_json(client, "/api/time-travel/diff?table=gold.status_by_location&from=4&to=1")
    assert back["counts"] == {"inserted": 0, "deleted": 1, "updated": 1}


@pytest.mark.parametrize("url", [
    "/api/time-travel/rows",
    "/api/time-travel/rows?table=gold.nope",
    "/api/time-travel/rows?table=gold.status_by_location&version=-1",
    "/api/time-travel/rows?table=gold.status_by_location&version=abc",
    "/api/time-travel/rows?table=gold.status_by_location&version=99",
    "/api/time-travel/rows?table=gold.status_by_location&as_of=yesterday",
    "/api/time-travel/rows?table=gold.status_by_location&as_of=1900-01-01T00:00:00Z",
    "/api/time-travel/rows?table=gold.status_by_location&version=1&as_of=2026-01-01T00:00:00Z",
    "/api/time-travel/rows?table=gold.status_by_location&limit=0",
    "/api/time-travel/rows?table=gold.status_by_location&sort=city",
    "/api/time-travel/rows?table=gold.incidents",
    "/api/time-travel/history?table=x%27%3B--",
    "/api/time-travel/diff?table=gold.status_by_location&from=1",
    "/api/time-travel/diff?table=gold.status_by_location&from=1&to=9",
    "/api/time-travel/diff?table=gold.status_by_location&from=one&to=2",
    "/api/time-travel/diff?table=silver.events&from=0&to=1&limit=9999",
])
def test_bad_input_gets_400_with_a_message(client, url):
    data = get_json(client, url, status=400)
    assert isinstance(data["error"], str) and data["error"] and "\n" not in data["error"]


def test_a_table_delta_rs_cannot_read_is_reported(client, lake, tmp_path, monkeypatch):
    """A table with a reader feature delta-rs does not know: the page says so (422 on reads)."""
    settings, _ = lake
    log = Path(settings.table_path("gold.incidents")) / "_delta_log"
    log.mkdir(parents=True)
    try:
        (log / f"{0:020d}.json").write_text("\n".join(json.dumps(a) for a in [
            {"commitInfo": {"timestamp": 1, "operation": "CREATE TABLE", "operationParameters": {}}},
            {"protocol": {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": ["madeUpFeature"],
                          "writerFeatures": ["madeUpFeature"]}},
            {"metaData": {"id": "x", "format": {"provider": "parquet", "options": {}},
                          "schemaString": json.dumps({"type": "struct", "fields": []}), "partitionColumns": [],
                          "configuration": {}, "createdTime": 1}},
        ]) + "\n")
        t = {t["table"]: t for t in get_json(client, "/api/time-travel/tables")["tables"]}["gold.incidents"]
        assert t["exists"] and t["readable"] is False and "delta-rs cannot read gold.incidents" in t["error"]
        assert "delta-rs" in get_json(client, "/api/time-travel/rows?table=gold.incidents", status=422)["error"]
    finally:
        import shutil

        shutil.rmtree(log.parent)


def test_page_renders_with_nav_and_strict_csp(client):
    response = client.get("/time-travel/")
    assert response.status_code == 200
    html = response.content.decode()
    assert ">Time travel</a>" in html and 'aria-current="page"' in html
    assert "<script>" not in html and "https://" not in html
    assert "/static/dashboard/time_travel.js" in html
    assert response["Content-Security-Policy"].startswith("default-src 'self'; script-src 'self';")
    config = json.loads(html.split('id="dash-config" type="application/json">')[1].split("</script>")[0])
    assert config["api"]["rows"] == "/api/time-travel/rows"
    assert client.get("/static/dashboard/time_travel.js").status_code == 200


def test_the_dashboard_reads_delta_without_pyspark(lake):
    """In a fresh process: the time-travel API answers and pyspark is never imported."""
    settings, _ = lake
    code = (
        "import sys, django, os\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'dashboard.settings'\n"
        "django.setup()\n"
        "from django.test.utils import setup_test_environment; setup_test_environment()\n"
        "from django.test import Client\n"
        "c = Client()\n"
        "r = c.get('/api/time-travel/rows?table=gold.status_by_location&version=2')\n"
        "assert r.status_code == 200, r.content\n"
        "d = c.get('/api/time-travel/diff?table=gold.status_by_location&from=1&to=4')\n"
        "assert d.status_code == 200, d.content\n"
        "assert not [m for m in sys.modules if m == 'pyspark' or m.startswith('pyspark.')], 'pyspark imported'\n"
        "print(r.json()['total'], d.json()['counts']['updated'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LAKEHOUSE_ROOT": settings.root})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["4", "1"]
