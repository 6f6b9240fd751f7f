"""Copy gold to PostgreSQL, incrementally and exactly once.

For each served table, ``sync_state`` holds the Delta version last copied (and the
table's Delta id: a table created anew, elsewhere or again, is copied whole). A sync reads
the table's Change Data Feed from the next version to the current one, keeps the last
change of each key, and upserts (``INSERT ... ON CONFLICT``) or deletes those rows, then
moves the high-water mark, all in one PostgreSQL transaction: a retry after a failure
half-way changes nothing, and a sync after PostgreSQL was down catches up. Where the
change feed cannot answer (a table rebuilt by replay or restored), the table is copied
whole, in the same transaction.
"""

from __future__ import annotations

import logging

import psycopg2
from psycopg2 import sql
from psycopg2.extras import execute_values
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from lakehouse import storage
from lakehouse.settings import Settings
from lakehouse.stack import writer_url
from lakehouse.tables import Table
from serving import schema

log = logging.getLogger(__name__)

# Operations whose changes the feed describes row by row; anything else (a replay's
# overwrite, RESTORE, ...) gets a full copy.
INCREMENTAL_OPERATIONS = {"MERGE", "WRITE", "STREAMING UPDATE", "CREATE TABLE", "OPTIMIZE"}


def connect(settings: Settings):
    conn = psycopg2.connect(writer_url(settings), connect_timeout=5, options="-c timezone=UTC")
    schema.apply(conn)
    return conn


def _rows(df: DataFrame, table: Table) -> list[tuple]:
    cols = [F.date_format(n, "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'").alias(n) if t == "TIMESTAMP" else F.col(n)
            for n, t, _ in table.columns]
    return [tuple(r) for r in df.select(*cols).toLocalIterator()]


def _last_changes(spark: SparkSession, settings: Settings, table: Table, start: int, end: int) -> DataFrame | None:
    from delta.tables import DeltaTable

    ops = (DeltaTable.forPath(spark, settings.table_path(table.name)).history()
           .where(f"version BETWEEN {start} AND {end}").select("operation", "operationParameters").collect())
    if any(o["operation"] not in INCREMENTAL_OPERATIONS or (o["operation"] == "WRITE" and
           (o["operationParameters"] or {}).get("mode") == "Overwrite") for o in ops):
        return None
    changes = (spark.read.format("delta").option("readChangeFeed", "true")
               .option("startingVersion", start).option("endingVersion", end)
               .load(settings.table_path(table.name))
               .where("_change_type != 'update_preimage'"))
    latest = Window.partitionBy(*table.keys).orderBy(F.desc("_commit_version"),
                                                     F.expr("_change_type = 'delete'"))
    return changes.withColumn("_n", F.row_number().over(latest)).where("_n = 1")


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


def sync_table(spark: SparkSession, settings: Settings, conn, table: Table) -> int | None:
    """Bring one served table up to its current Delta version; returns rows written, or None if current."""
    from delta.tables import DeltaTable

    current = storage.version(spark, settings, table.name)
    table_id = DeltaTable.forPath(spark, settings.table_path(table.name)).detail().first()["id"]
    with conn.cursor() as cur:
        cur.execute("SELECT delta_version, table_id FROM sync_state WHERE table_name = %s FOR UPDATE", [table.name])
        row = cur.fetchone()
        last = row[0] if row and row[1] == table_id else None
        if last is not None and last >= current:
            conn.rollback()
            return None
        changes = _last_changes(spark, settings, table, last + 1, current) if last is not None else None
        if changes is None:
            rows = _rows(storage.read(spark, settings, table.name), table)
            cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(schema.serving_name(table))))
            if rows:
                _upsert(cur, table, rows)
        else:
            changes = changes.persist()
            rows = _rows(changes.where("_change_type != 'delete'"), table)
            gone = [tuple(r) for r in changes.where("_change_type = 'delete'").select(*table.keys).collect()]
            changes.unpersist()
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


def sync_all(spark: SparkSession, settings: Settings, conn=None) -> dict[str, int | None]:
    """Sync every served table; opens (and closes) its own connection unless given one."""
    own = conn is None
    conn = conn or connect(settings)
    try:
        return {t.name: sync_table(spark, settings, conn, t) for t in schema.SERVED.values()}
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
