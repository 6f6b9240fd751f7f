"""The refining query: bronze.events (Delta source) -> silver -> the four gold tables.

Silver and gold run in one streaming query, one micro-batch after the other: each batch
writes silver (``silver.stream.process_batch``), then merges the new silver rows into gold.
One hop fewer than a gold query streaming from silver: no wait for gold's next trigger,
and no second query competing for the cores.

Every write carries the batch id as a Delta transaction id, so a re-run batch changes
nothing twice, and silver hands a re-run the same new rows (it de-duplicates without the
batch's own rows). Incidents are merged before server_state: both are computed from the
state before the batch, and a re-run that finds incidents committed but server_state
not yet computes the same server_state again.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from lakehouse import storage
from lakehouse.gold import transforms as T
from lakehouse.settings import Settings
from lakehouse.silver import stream as silver
from lakehouse.tables import (
    BRONZE_EVENTS,
    GOLD_INCIDENTS,
    GOLD_SERVER_STATE,
    GOLD_STATUS_BY_LOCATION,
    GOLD_STATUS_BY_MINUTE,
    SILVER_EVENTS,
    Table,
)

SOURCE = BRONZE_EVENTS.name  # the Delta table the query streams from
QUERY = "refine"
# MERGE's sources here are aggregates of a checkpointed batch: deterministic, so Delta need
# not copy them first (its default copies every source that is not a plain table scan).
MERGE_CONF = {"spark.databricks.delta.merge.materializeSource": "none"}


def _on_keys(table: Table) -> str:
    return " AND ".join(f"t.`{k}` = s.`{k}`" for k in table.keys)


def _merge(spark: SparkSession, settings: Settings, table: Table, source: DataFrame, writer: str, batch_id: int,
           update: dict[str, str] | None = None) -> None:
    target = DeltaTable.forPath(spark, settings.table_path(table.name)).alias("t")
    merge = target.merge(source.alias("s"), _on_keys(table))
    merge = merge.whenMatchedUpdate(set=update) if update else merge.whenMatchedUpdateAll()
    with storage.once(spark, table.name, writer, batch_id, MERGE_CONF):
        merge.whenNotMatchedInsertAll().execute()


_ADD = {"event_count": "t.event_count + s.event_count",
        "total_estimated_resolution_time": "t.total_estimated_resolution_time + s.total_estimated_resolution_time"}


def _merge_aggregates(spark: SparkSession, settings: Settings, events: DataFrame, writer: str, batch_id: int) -> None:
    _merge(spark, settings, GOLD_STATUS_BY_LOCATION, T.status_by_location(events), writer, batch_id, _ADD)
    _merge(spark, settings, GOLD_STATUS_BY_MINUTE, T.status_by_minute(events), writer, batch_id, {
        **_ADD,
        "max_estimated_resolution_time": "greatest(t.max_estimated_resolution_time, s.max_estimated_resolution_time)",
        "avg_estimated_resolution_time": "(t.total_estimated_resolution_time + s.total_estimated_resolution_time)"
                                         " / (t.event_count + s.event_count)",
    })


def process_batch(events: DataFrame, batch_id: int, settings: Settings, writer: str,
                  side: SparkSession | None = None) -> int:
    """Merge one batch of new silver rows into the gold tables; returns gold's table version.
    ``events`` must be materialized (silver hands a local checkpoint): MERGE does not copy its
    source.

    The two aggregates are merged from a second session (``side``; the transaction-id settings
    are per session) while this one computes the server timeline: a MERGE spends much of its
    time on the driver, so the two overlap well even on two cores. Neither half reads what the
    other writes, so a re-run after a crash in either is still exact."""
    spark = events.sparkSession
    with ThreadPoolExecutor(1, thread_name_prefix="gold-aggregates") as pool:
        aggregates = pool.submit(_merge_aggregates, side or spark.newSession(), settings, events, writer, batch_id)
        state = storage.read(spark, settings, GOLD_SERVER_STATE.name)
        open_incidents = storage.read(spark, settings, GOLD_INCIDENTS.name).where("is_open")
        new_state, incidents = T.from_timeline(T.timeline(events, state).localCheckpoint(), open_incidents)
        # Pin both to the state before this batch, then write.
        new_state, incidents = new_state.localCheckpoint(), incidents.localCheckpoint()
        _merge(spark, settings, GOLD_INCIDENTS, incidents, writer, batch_id)
        _merge(spark, settings, GOLD_SERVER_STATE, new_state, writer, batch_id)
        aggregates.result()
    return storage.version(spark, settings, GOLD_STATUS_BY_LOCATION.name)


def start(spark: SparkSession, settings: Settings, trigger: dict, on_batch) -> StreamingQuery:
    """The query; ``on_batch(layer, batch_id, figures)`` gets silver's and gold's figures of each batch."""
    writer: list[str] = []
    side = spark.newSession()  # gold's second session, kept for the query's life

    def run(df: DataFrame, batch_id: int) -> None:
        writer[:] = writer or [storage.query_id(df.sparkSession, settings, QUERY)]
        started = time.monotonic()
        events, figures = silver.process_batch(df, batch_id, settings, writer[0])
        halfway = time.monotonic()
        on_batch("silver", batch_id, {**figures, "duration_ms": round((halfway - started) * 1000)})
        n = figures["rows_out"]  # the batch's new silver rows, all merged
        if n:
            version = process_batch(events, batch_id, settings, writer[0], side)
        else:  # nothing new for gold (every row quarantined or a duplicate): no empty MERGE commits
            version = storage.version(df.sparkSession, settings, GOLD_STATUS_BY_LOCATION.name)
        on_batch("gold", batch_id, {"rows_in": n, "rows_out": n, "table_version": version,
                                    "duration_ms": round((time.monotonic() - halfway) * 1000)})

    return (storage.stream_from(spark, settings, BRONZE_EVENTS.name, QUERY)
            .writeStream.queryName(QUERY).foreachBatch(run)
            .option("checkpointLocation", settings.checkpoint_path(QUERY))
            .trigger(**trigger).start())


def rebuild(spark: SparkSession, settings: Settings) -> None:
    """Replay: every gold table recomputed from the whole of silver."""
    events = storage.read(spark, settings, SILVER_EVENTS.name).persist()
    empty_state = spark.createDataFrame([], GOLD_SERVER_STATE.ddl)
    empty_incidents = spark.createDataFrame([], GOLD_INCIDENTS.ddl)
    state, incidents = T.server_timeline(events, empty_state, empty_incidents)
    storage.overwrite(T.status_by_location(events), settings, GOLD_STATUS_BY_LOCATION.name)
    storage.overwrite(T.status_by_minute(events), settings, GOLD_STATUS_BY_MINUTE.name)
    storage.overwrite(incidents, settings, GOLD_INCIDENTS.name)
    storage.overwrite(state, settings, GOLD_SERVER_STATE.name)
    events.unpersist()
