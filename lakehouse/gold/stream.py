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
)

SOURCE = BRONZE_EVENTS.name  # the Delta table the query streams from
QUERY = "refine"

_ADD = {"event_count": "t.event_count + s.event_count",
        "total_estimated_resolution_time": "t.total_estimated_resolution_time + s.total_estimated_resolution_time"}
_ADD_BY_MINUTE = {
    **_ADD,
    "max_estimated_resolution_time": "greatest(t.max_estimated_resolution_time, s.max_estimated_resolution_time)",
    # a DOUBLE division in either engine (delta-rs's SQL divides two BIGINTs as integers)
    "avg_estimated_resolution_time": "CAST(t.total_estimated_resolution_time + s.total_estimated_resolution_time"
                                     " AS DOUBLE) / (t.event_count + s.event_count)",
}


def process_batch(events: DataFrame, batch_id: int, settings: Settings, writer: str) -> int:
    """Merge one batch of new silver rows into the gold tables; returns gold's table version.
    ``events`` must be pinned (silver hands rows of a local checkpoint). The aggregates go
    first: they are what the overview shows."""
    spark = events.sparkSession
    storage.merge_once(T.status_by_location(events), settings, GOLD_STATUS_BY_LOCATION, writer, batch_id, _ADD)
    storage.merge_once(T.status_by_minute(events), settings, GOLD_STATUS_BY_MINUTE, writer, batch_id, _ADD_BY_MINUTE)
    state = storage.read_small(spark, settings, GOLD_SERVER_STATE.name)
    open_incidents = storage.read_small(spark, settings, GOLD_INCIDENTS.name, ("is_open", True))
    new_state, incidents = T.from_timeline(T.timeline(events, state).localCheckpoint(), open_incidents)
    # Pin both to the state before this batch, then write.
    new_state, incidents = new_state.localCheckpoint(), incidents.localCheckpoint()
    storage.merge_once(incidents, settings, GOLD_INCIDENTS, writer, batch_id)
    storage.merge_once(new_state, settings, GOLD_SERVER_STATE, writer, batch_id)
    return storage.version(spark, settings, GOLD_STATUS_BY_LOCATION.name)


def start(spark: SparkSession, settings: Settings, trigger: dict, on_batch) -> StreamingQuery:
    """The query; ``on_batch(layer, batch_id, figures)`` gets silver's and gold's figures of each batch."""
    writer: list[str] = []

    def run(df: DataFrame, batch_id: int) -> None:
        writer[:] = writer or [storage.query_id(df.sparkSession, settings, QUERY)]
        started = time.monotonic()
        events, figures = silver.process_batch(df, batch_id, settings, writer[0])
        halfway = time.monotonic()
        on_batch("silver", batch_id, {**figures, "duration_ms": round((halfway - started) * 1000)})
        n = figures["rows_out"]  # the batch's new silver rows, all merged
        if n:
            version = process_batch(events, batch_id, settings, writer[0])
        else:  # nothing new for gold (every row quarantined or a duplicate): no empty MERGE commits
            version = storage.version(df.sparkSession, settings, GOLD_STATUS_BY_LOCATION.name)
        on_batch("gold", batch_id, {"rows_in": n, "rows_out": n, "table_version": version,
                                    "duration_ms": round((time.monotonic() - halfway) * 1000)})

    # Bounded batches: a catch-up after an outage reads bronze in bites the driver can hold
    # (a whole million-event backlog in one batch ran a 2 GB driver out of memory).
    source = storage.stream_from(spark, settings, BRONZE_EVENTS.name, QUERY,
                                 {"maxBytesPerTrigger": settings.refine_max_bytes_per_trigger})
    return (source
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
