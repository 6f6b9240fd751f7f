"""Copy gold to PostgreSQL, incrementally and exactly once.

For each served table, ``sync_state`` holds the Delta version last copied (and the
table's Delta id: a table created anew, elsewhere or again, is copied whole). A sync reads
the table's Change Data Feed from the next version to the current one, keeps the last
change of each key, and upserts (``INSERT ... ON CONFLICT``) or deletes those rows, then
moves the high-water mark, all in one PostgreSQL transaction: a retry after a failure
half-way changes nothing, and a sync after PostgreSQL was down catches up. Where the
change feed cannot answer (a table rebuilt by replay or restored, change files vacuumed),
the table is copied whole, in the same transaction.

The Delta side is read with delta-rs (the ``deltalake`` package), not Spark: the gold
changes of a micro-batch are small, and a JVM job per table per sync cost seconds of the
dashboard's freshness.
"""

from __future__ import annotations

import logging

import psycopg2
from psycopg2 import sql
from psycopg2.extras import execute_values

from lakehouse.settings import Settings
from lakehouse.stack import writer_url
from lakehouse.tables import Table
from lakehouse.timetravel import exists, local_path
from serving import schema

log = logging.getLogger(__name__)

# Operations whose changes the feed describes row by row (or that change no rows); anything
# else (a replay's overwrite, RESTORE, ...) gets a full copy.
INCREMENTAL_OPERATIONS = {"MERGE", "WRITE", "STREAMING UPDATE", "CREATE TABLE", "OPTIMIZE", "SET TBLPROPERTIES",
                          "VACUUM START", "VACUUM END"}


def connect(settings: Settings):
    conn = psycopg2.connect(writer_url(settings), connect_timeout=5, options="-c timezone=UTC")
    schema.apply(conn)
    return conn


def _delta(settings: Settings, table: Table):
    from deltalake import DeltaTable

    return DeltaTable(str(local_path(settings.table_path(table.name))))


def _columns(arrow) -> dict[str, list]:
    return {n: arrow.column(n).to_pylist() for n in arrow.column_names}


def _all_rows(delta, table: Table) -> list[tuple]:
    from deltalake import QueryBuilder

    cols = ", ".join('"' + c + '"' for c in table.column_names)
    data = _columns(QueryBuilder().register("t", delta).execute(f"SELECT {cols} FROM t").read_all())
    return list(zip(*(data[c] for c in table.column_names)))


def _last_changes(delta, table: Table, start: int, end: int) -> tuple[list[tuple], list[tuple]] | None:
    """(rows to upsert, keys to delete) between two versions, or None where only a full copy can tell."""
    # Only the commits in the range: the table is loaded at ``end``, and its whole history would
    # grow with every micro-batch of a long-running stream.
    for entry in delta.history(limit=end - start + 1):
        if start <= entry.get("version", -1) <= end:
            op, params = entry.get("operation"), entry.get("operationParameters") or {}
            if op not in INCREMENTAL_OPERATIONS or (op == "WRITE" and params.get("mode") == "Overwrite"):
                return None
    try:
        data = _columns(delta.load_cdf(starting_version=start, ending_version=end).read_all())
    except Exception as e:  # noqa: BLE001 - change files gone (VACUUM), unreadable: copy whole
        log.info("change feed of %s unreadable (%s): copying it whole", table.name, str(e).splitlines()[0][:200])
        return None
    order = sorted(range(len(data["_change_type"])),
                   key=lambda i: (data["_commit_version"][i], data["_change_type"][i] != "delete"))
    last: dict[tuple, tuple[str, tuple]] = {}
    for i in order:
        kind = data["_change_type"][i]
        if kind == "update_preimage":
            continue
        key = tuple(data[k][i] for k in table.keys)
        last[key] = (kind, tuple(data[c][i] for c in table.column_names))
    rows = [row for kind, row in last.values() if kind != "delete"]
    gone = [key for key, (kind, _) in last.items() if kind == "delete"]
    return rows, gone


def _upsert(cur, table: Table, rows: list[tuple]) -> None:
    name = sql.Identifier(schema.serving_name(table))
    cols = sql.SQL(", ").join(map(sql.Identifier, table.column_names))
    keys = sql.SQL(", ").join(map(sql.Identifier, table.keys))
    updates = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
                                 for c in table.column_names if c not in table.keys)
    query = sql.SQL("INSERT INTO {} ({}) VALUES %s ON CONFLICT ({}) DO UPDATE SET {}").format(name, cols, keys, updates)
    execute_values(cur, query.as_string(cur), rows, page_size=1000)


def _delete(cur, table: Table, keys: list[tuple]) -> None:
    name = sql.Identifier(schema.serving_name(table))
    cols = sql.SQL(", ").join(map(sql.Identifier, table.keys))
    query = sql.SQL("DELETE FROM {} WHERE ({}) IN (VALUES %s)").format(name, cols)
    execute_values(cur, query.as_string(cur), keys, page_size=1000)


def sync_table(settings: Settings, conn, table: Table) -> int | None:
    """Bring one served table up to its current Delta version; returns rows written, or None if current."""
    if not exists(settings, table.name):
        return None  # the pipeline has not created it yet: nothing to copy
    delta = _delta(settings, table)
    current, table_id = delta.version(), delta.metadata().id
    with conn.cursor() as cur:
        cur.execute("SELECT delta_version, table_id FROM sync_state WHERE table_name = %s FOR UPDATE", [table.name])
        row = cur.fetchone()
        last = row[0] if row and row[1] == table_id else None
        if last is not None and last >= current:
            conn.rollback()
            return None
        changes = _last_changes(delta, table, last + 1, current) if last is not None else None
        if changes is None:
            rows = _all_rows(delta, table)
            cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(schema.serving_name(table))))
            if rows:
                _upsert(cur, table, rows)
        else:
            rows, gone = changes
            if rows:
                _upsert(cur, table, rows)
            if gone:
                _delete(cur, table, gone)
        cur.execute("INSERT INTO sync_state (table_name, table_id, delta_version, synced_at) "
                    "VALUES (%s, %s, %s, now()) ON CONFLICT (table_name) DO UPDATE SET "
                    "table_id = EXCLUDED.table_id, delta_version = EXCLUDED.delta_version, "
                    "synced_at = EXCLUDED.synced_at", [table.name, table_id, current])
    conn.commit()
    return len(rows)


def sync_all(settings: Settings, conn=None) -> dict[str, int | None]:
    """Sync every served table; opens (and closes) its own connection unless given one."""
    own = conn is None
    conn = conn or connect(settings)
    try:
        return {t.name: sync_table(settings, conn, t) for t in schema.SERVED.values()}
    finally:
        if own:
            conn.close()


def record_batches(conn, batches: list[dict]) -> None:
    """Micro-batch statistics for the dashboard's pipeline page (idempotent by layer, query and batch id)."""
    if not batches:
        return
    cols = ("layer", "query_id", "batch_id", "rows_in", "rows_out", "quarantined", "duplicates_dropped", "duration_ms",
            "kafka_lag", "table_version")
    with conn.cursor() as cur:
        execute_values(cur, f"INSERT INTO pipeline_batches ({', '.join(cols)}) VALUES %s "
                            "ON CONFLICT (layer, query_id, batch_id) DO UPDATE SET "
                            + ", ".join(f"{c} = EXCLUDED.{c}" for c in cols[3:]) + ", finished_at = now()",
                       [tuple(b.get(c) for c in cols) for b in batches])
    conn.commit()
