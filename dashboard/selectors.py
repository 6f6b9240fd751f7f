"""Read-only queries over the PostgreSQL serving schema (serving/schema.py owns it).

Each selector runs parameterised SQL through ``django.db.connection`` (the read-only
reader role) and returns plain dicts and lists, ready for JSON. Sums come back as
integers and averages as floats (never Decimal). Views call these and nothing else.
"""

from __future__ import annotations

import math
from datetime import datetime

from django.db import connection

STATUSES = ("Red", "Orange", "Green")
MAX_CHART_POINTS = 720
EVENTS_PER_MINUTE_WINDOW = 5  # complete minutes averaged by the events/min tile


def _rows(sql: str, params=()) -> list[dict]:
    with connection.cursor() as cur:
        cur.execute(sql, params)
        names = [c.name for c in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def _one(sql: str, params=()) -> dict:
    rows = _rows(sql, params)
    return rows[0] if rows else {}


def _where(filters: dict[str, object]) -> tuple[str, list]:
    """AND of column = %s for the filters that are set; column names are ours, never input."""
    clauses, params = [], []
    for column, value in filters.items():
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


# --- status_by_location (cumulative since the pipeline started: no time column) ------------

def status_by_location(*, country: str | None = None, city: str | None = None, limit: int = 10000) -> list[dict]:
    """Every (country, city, status, severity) row with its event count and total resolution time."""
    where, params = _where({"country_code": country, "city": city})
    return _rows(
        "SELECT country_code, country_name, city, status_color, severity_level, "
        "event_count::bigint AS event_count, "
        "total_estimated_resolution_time::bigint AS total_estimated_resolution_time "
        f"FROM status_by_location{where} "
        "ORDER BY country_code, city, status_color, severity_level LIMIT %s",
        [*params, limit],
    )


def events_by_city(*, limit: int = 20) -> list[dict]:
    """Per city: events by status colour and in total, the busiest cities first."""
    return _rows(
        "SELECT city, country_code, "
        "COALESCE(SUM(event_count) FILTER (WHERE status_color = 'Red'), 0)::bigint AS \"Red\", "
        "COALESCE(SUM(event_count) FILTER (WHERE status_color = 'Orange'), 0)::bigint AS \"Orange\", "
        "COALESCE(SUM(event_count) FILTER (WHERE status_color = 'Green'), 0)::bigint AS \"Green\", "
        "SUM(event_count)::bigint AS total "
        "FROM status_by_location GROUP BY city, country_code ORDER BY total DESC, city LIMIT %s",
        [limit],
    )


# --- status_by_minute -------------------------------------------------------------------

def bucket_minutes(since: datetime, until: datetime) -> int:
    """Chart bucket size: one minute, or more so that a range has at most MAX_CHART_POINTS."""
    minutes = max(1.0, (until - since).total_seconds() / 60)
    return max(1, math.ceil(minutes / MAX_CHART_POINTS))


def status_over_time(*, since: datetime, until: datetime) -> dict:
    """Events per time bucket and status colour, zero-filled, for the status-over-time chart."""
    bucket = bucket_minutes(since, until)
    rows = _rows(
        "SELECT date_bin(make_interval(mins => %s), window_start, TIMESTAMPTZ '2000-01-01') AS bucket, "
        "status_color, SUM(event_count)::bigint AS events "
        "FROM status_by_minute WHERE window_start >= %s AND window_start < %s "
        "GROUP BY 1, 2 ORDER BY 1",
        [bucket, since, until],
    )
    by_time: dict[datetime, dict[str, int]] = {}
    for r in rows:
        by_time.setdefault(r["bucket"], {})[r["status_color"]] = r["events"]
    times = sorted(by_time)
    return {
        "bucket_minutes": bucket,
        "times": times,
        "series": {s: [by_time[t].get(s, 0) for t in times] for s in STATUSES},
    }


def events_by_status(*, since: datetime, until: datetime) -> dict[str, int]:
    rows = _rows(
        "SELECT status_color, SUM(event_count)::bigint AS events FROM status_by_minute "
        "WHERE window_start >= %s AND window_start < %s GROUP BY status_color",
        [since, until],
    )
    counts = {s: 0 for s in STATUSES}
    counts.update({r["status_color"]: r["events"] for r in rows})
    return counts


def events_per_minute(*, minutes: int = EVENTS_PER_MINUTE_WINDOW) -> float:
    """Average events per minute over the last `minutes` complete minutes (wall clock)."""
    row = _one(
        "SELECT COALESCE(SUM(event_count), 0)::float8 AS events FROM status_by_minute "
        "WHERE window_start >= date_trunc('minute', now()) - make_interval(mins => %s) "
        "AND window_start < date_trunc('minute', now())",
        [minutes],
    )
    return round(row["events"] / minutes, 2)


# --- server_state -------------------------------------------------------------------------

def server_counts() -> dict[str, int]:
    """Servers per current status colour, with the total."""
    counts = {s: 0 for s in STATUSES}
    for r in _rows("SELECT status_color, COUNT(*)::bigint AS n FROM server_state GROUP BY status_color"):
        counts[r["status_color"]] = r["n"]
    counts["total"] = sum(counts.values())
    return counts


SERVER_COLUMNS = ("server_id, server_type, country_code, country_name, city, status_color, severity_level, "
                  "status_since, last_event_time, last_event_id, estimated_resolution_time, "
                  "EXTRACT(EPOCH FROM now() - status_since)::bigint AS status_seconds")


def server_list(*, status: str | None = None, country: str | None = None, city: str | None = None,
                server_type: str | None = None, limit: int = 50, offset: int = 0) -> dict:
    """One page of servers, worst status first, with the total that match the filters."""
    where, params = _where({"status_color": status, "country_code": country, "city": city,
                            "server_type": server_type})
    total = _one(f"SELECT COUNT(*)::bigint AS n FROM server_state{where}", params)["n"]
    rows = _rows(
        f"SELECT {SERVER_COLUMNS} FROM server_state{where} "
        "ORDER BY CASE status_color WHEN 'Red' THEN 0 WHEN 'Orange' THEN 1 ELSE 2 END, "
        "status_since, server_id LIMIT %s OFFSET %s",
        [*params, limit, offset],
    )
    return {"total": total, "limit": limit, "offset": offset, "rows": rows}


def server_facets() -> dict:
    """The values the server filters offer: countries, cities and server types present."""
    return {
        "countries": _rows("SELECT DISTINCT country_code, country_name FROM server_state "
                           "WHERE country_code IS NOT NULL ORDER BY country_name, country_code"),
        "cities": _rows("SELECT DISTINCT city, country_code FROM server_state WHERE city IS NOT NULL "
                        "ORDER BY city"),
        "server_types": [r["server_type"] for r in _rows(
            "SELECT DISTINCT server_type FROM server_state WHERE server_type IS NOT NULL ORDER BY server_type")],
        "statuses": list(STATUSES),
    }


def server(server_id: str) -> dict | None:
    return _one(f"SELECT {SERVER_COLUMNS} FROM server_state WHERE server_id = %s", [server_id]) or None


INCIDENT_COLUMNS = ("incident_id, server_id, server_type, country_code, country_name, city, started_at, ended_at, "
                    "COALESCE(duration_seconds, EXTRACT(EPOCH FROM now() - started_at)::bigint) AS duration_seconds, "
                    "worst_severity, is_open")


def server_history(server_id: str, *, limit: int = 50) -> list[dict]:
    """A server's incidents, newest first (open ones show their duration so far)."""
    return _rows(f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE server_id = %s "
                 "ORDER BY started_at DESC LIMIT %s", [server_id, limit])


# --- incidents ----------------------------------------------------------------------------

def open_incident_count() -> int:
    return _one("SELECT COUNT(*)::bigint AS n FROM incidents WHERE is_open")["n"]


def mttr(*, since: datetime, until: datetime) -> dict:
    """Mean time to resolve the incidents that closed in [since, until)."""
    row = _one("SELECT AVG(duration_seconds)::float8 AS seconds, COUNT(*)::bigint AS incidents FROM incidents "
               "WHERE NOT is_open AND ended_at >= %s AND ended_at < %s", [since, until])
    return {"seconds": row["seconds"], "incidents": row["incidents"]}


def open_incidents(*, limit: int = 50, offset: int = 0) -> dict:
    """Open incidents, the longest-running first."""
    total = open_incident_count()
    rows = _rows(f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE is_open "
                 "ORDER BY started_at, incident_id LIMIT %s OFFSET %s", [limit, offset])
    return {"total": total, "limit": limit, "offset": offset, "rows": rows}


def closed_incidents(*, since: datetime, until: datetime, limit: int = 50, offset: int = 0) -> dict:
    """Incidents that closed in [since, until), the most recent first."""
    params = [since, until]
    where = " WHERE NOT is_open AND ended_at >= %s AND ended_at < %s"
    total = _one(f"SELECT COUNT(*)::bigint AS n FROM incidents{where}", params)["n"]
    rows = _rows(f"SELECT {INCIDENT_COLUMNS} FROM incidents{where} "
                 "ORDER BY ended_at DESC, incident_id LIMIT %s OFFSET %s", [*params, limit, offset])
    return {"total": total, "limit": limit, "offset": offset, "rows": rows}


def mttr_by(dimension: str, *, since: datetime, until: datetime) -> list[dict]:
    """MTTR of the incidents closed in the range, by 'location' (country, city) or 'type'."""
    group = {"location": "country_code, country_name, city", "type": "server_type"}[dimension]
    return _rows(
        f"SELECT {group}, COUNT(*)::bigint AS incidents, AVG(duration_seconds)::float8 AS mttr_seconds, "
        "MAX(duration_seconds)::bigint AS max_seconds FROM incidents "
        "WHERE NOT is_open AND ended_at >= %s AND ended_at < %s "
        f"GROUP BY {group} ORDER BY mttr_seconds DESC, {group}",
        [since, until],
    )


# --- pipeline -----------------------------------------------------------------------------

def pipeline_layers(*, since: datetime, until: datetime) -> list[dict]:
    """Per layer: its last batch (rows, duration, Kafka lag, age) and totals over the range."""
    return _rows(
        "WITH last AS (SELECT DISTINCT ON (layer) layer, batch_id, rows_in, rows_out, quarantined, "
        "duplicates_dropped, duration_ms, kafka_lag, table_version, finished_at "
        "FROM pipeline_batches ORDER BY layer, finished_at DESC, batch_id DESC), "
        "agg AS (SELECT layer, COUNT(*)::bigint AS batches, SUM(rows_in)::bigint AS rows_in, "
        "SUM(rows_out)::bigint AS rows_out, AVG(duration_ms)::float8 AS avg_duration_ms "
        "FROM pipeline_batches WHERE finished_at >= %s AND finished_at < %s GROUP BY layer) "
        "SELECT last.*, EXTRACT(EPOCH FROM now() - last.finished_at)::float8 AS age_seconds, "
        "COALESCE(agg.batches, 0) AS range_batches, COALESCE(agg.rows_in, 0) AS range_rows_in, "
        "COALESCE(agg.rows_out, 0) AS range_rows_out, agg.avg_duration_ms AS range_avg_duration_ms "
        "FROM last LEFT JOIN agg USING (layer) "
        "ORDER BY CASE last.layer WHEN 'bronze' THEN 0 WHEN 'silver' THEN 1 WHEN 'gold' THEN 2 ELSE 3 END, last.layer",
        [since, until],
    )


def pipeline_batches(*, since: datetime, until: datetime, limit: int = 2000) -> list[dict]:
    """Batches that finished in the range (oldest first), for the duration chart."""
    return _rows(
        "SELECT * FROM (SELECT layer, batch_id, rows_in, rows_out, duration_ms, kafka_lag, finished_at "
        "FROM pipeline_batches WHERE finished_at >= %s AND finished_at < %s "
        "ORDER BY finished_at DESC LIMIT %s) b ORDER BY finished_at",
        [since, until, limit],
    )


def table_versions() -> list[dict]:
    """sync_state: the Delta version of each served table and when it was synced."""
    return _rows("SELECT table_name, delta_version, synced_at, "
                 "EXTRACT(EPOCH FROM now() - synced_at)::float8 AS age_seconds "
                 "FROM sync_state ORDER BY table_name")


# --- the overview ------------------------------------------------------------------------

def overview(*, since: datetime, until: datetime) -> dict:
    """Everything the Overview page shows, in one round trip."""
    return {
        "tiles": {
            "events_per_minute": events_per_minute(),
            "events_per_minute_window": EVENTS_PER_MINUTE_WINDOW,
            "servers": server_counts(),
            "open_incidents": open_incident_count(),
            "mttr": mttr(since=since, until=until),
        },
        "events_by_status": events_by_status(since=since, until=until),
        "events_by_city": events_by_city(),
        "status_over_time": status_over_time(since=since, until=until),
    }


# --- data quality (quality_results, quality_quarantine: written by lakehouse/quality.py) ----

def _layer_order(column: str) -> str:
    return f"CASE split_part({column}, '.', 1) WHEN 'bronze' THEN 0 WHEN 'silver' THEN 1 WHEN 'gold' THEN 2 ELSE 3 END"


def quality_latest(*, table: str | None = None, rule: str | None = None) -> list[dict]:
    """Per table and rule: its latest validation (all its expectations there), passed or not."""
    where, params = _where({"table_name": table, "rule": rule})
    return _rows(
        "WITH latest AS (SELECT DISTINCT ON (table_name, rule) table_name, rule, validation_id, validated_at "
        f"FROM quality_results{where} ORDER BY table_name, rule, validated_at DESC, validation_id DESC) "
        "SELECT l.table_name, l.rule, l.validated_at, MAX(r.policy) AS policy, bool_and(r.success) AS success, "
        "COUNT(*)::bigint AS expectations, COALESCE(SUM(r.unexpected_count), 0)::bigint AS unexpected_count, "
        "MAX(r.element_count)::bigint AS element_count, MAX(r.delta_version)::bigint AS delta_version, "
        "string_agg(DISTINCT r.reason, '; ') FILTER (WHERE NOT r.success) AS reason, "
        "EXTRACT(EPOCH FROM now() - l.validated_at)::float8 AS age_seconds "
        "FROM latest l JOIN quality_results r USING (table_name, rule, validation_id) "
        f"GROUP BY l.table_name, l.rule, l.validated_at ORDER BY {_layer_order('l.table_name')}, "
        "l.table_name, l.rule",
        params,
    )


def quality_totals(*, since: datetime, until: datetime, table: str | None = None, rule: str | None = None) -> dict:
    """Validations, expectations evaluated and failed, and the pass rate, in the range."""
    where, params = _where({"table_name": table, "rule": rule})
    where = (where + " AND" if where else " WHERE") + " validated_at >= %s AND validated_at < %s"
    row = _one(
        "SELECT COUNT(DISTINCT validation_id)::bigint AS validations, COUNT(*)::bigint AS expectations, "
        "COUNT(*) FILTER (WHERE NOT success)::bigint AS failed, MAX(validated_at) AS last_validated_at "
        f"FROM quality_results{where}",
        [*params, since, until],
    )
    row["pass_rate"] = (row["expectations"] - row["failed"]) / row["expectations"] if row["expectations"] else None
    return row


def quality_pass_rates(*, since: datetime, until: datetime, table: str | None = None,
                       rule: str | None = None) -> dict:
    """Share of the expectations that held, per time bucket and layer (bronze, silver, gold)."""
    bucket = bucket_minutes(since, until)
    where, params = _where({"table_name": table, "rule": rule})
    where = (where + " AND" if where else " WHERE") + " validated_at >= %s AND validated_at < %s"
    rows = _rows(
        "SELECT date_bin(make_interval(mins => %s), validated_at, TIMESTAMPTZ '2000-01-01') AS bucket, "
        "split_part(table_name, '.', 1) AS layer, COUNT(*) FILTER (WHERE success)::float8 / COUNT(*) AS rate "
        f"FROM quality_results{where} GROUP BY 1, 2 ORDER BY 1",
        [bucket, *params, since, until],
    )
    by_time: dict[datetime, dict[str, float]] = {}
    for r in rows:
        by_time.setdefault(r["bucket"], {})[r["layer"]] = round(r["rate"], 4)
    times = sorted(by_time)
    layers = [x for x in ("bronze", "silver", "gold") if any(x in v for v in by_time.values())]
    layers += sorted({k for v in by_time.values() for k in v} - set(layers))
    return {"bucket_minutes": bucket, "times": times,
            "series": {layer: [by_time[t].get(layer) for t in times] for layer in layers}}


def quality_failures(*, since: datetime, until: datetime, table: str | None = None, rule: str | None = None,
                     limit: int = 50, offset: int = 0) -> dict:
    """Failed expectations in the range, newest first, with their sample rows; paginated."""
    where, params = _where({"table_name": table, "rule": rule})
    where = (where + " AND" if where else " WHERE") + " NOT success AND validated_at >= %s AND validated_at < %s"
    params = [*params, since, until]
    total = _one(f"SELECT COUNT(*)::bigint AS n FROM quality_results{where}", params)["n"]
    rows = _rows(
        "SELECT validation_id, validated_at, suite, table_name, delta_version, batch_id, rule, policy, expectation, "
        "observed_value, element_count, unexpected_count, unexpected_percent, sample_rows, reason "
        f"FROM quality_results{where} ORDER BY validated_at DESC, validation_id, rule, expectation "
        "LIMIT %s OFFSET %s",
        [*params, limit, offset],
    )
    return {"total": total, "limit": limit, "offset": offset, "rows": rows}


def quality_quarantine() -> list[dict]:
    """Records quarantined per rule (all of silver.quarantine), with a few recent samples."""
    return _rows("SELECT rule, quarantined::bigint AS quarantined, last_quarantined_at, samples, updated_at "
                 "FROM quality_quarantine ORDER BY quarantined DESC, rule")
