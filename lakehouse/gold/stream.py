"""Gold's streaming edge: silver.events (Delta source) -> the four gold tables, by MERGE.

Every MERGE carries the batch id as a Delta transaction id, so a re-run batch changes
nothing twice. Incidents are merged before server_state: both are computed from the
state before the batch, and a re-run that finds incidents committed but server_state
not yet computes the same server_state again.
"""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from lakehouse import storage
from lakehouse.gold import transforms as T
from lakehouse.settings import Settings
from lakehouse.tables import (
    GOLD_INCIDENTS,
    GOLD_SERVER_STATE,
    GOLD_STATUS_BY_LOCATION,
    GOLD_STATUS_BY_MINUTE,
    SILVER_EVENTS,
    Table,
)

SOURCE = SILVER_EVENTS.name  # the Delta table it streams from
QUERY = "gold"


def _on_keys(table: Table) -> str:
    return " AND ".join(f"t.`{k}` = s.`{k}`" for k in table.keys)


def _merge(spark: SparkSession, settings: Settings, table: Table, source: DataFrame, writer: str, batch_id: int,
           update: dict[str, str] | None = None) -> None:
    target = DeltaTable.forPath(spark, settings.table_path(table.name)).alias("t")
    merge = target.merge(source.alias("s"), _on_keys(table))
    merge = merge.whenMatchedUpdate(set=update) if update else merge.whenMatchedUpdateAll()
    with storage.once(spark, table.name, writer, batch_id):
        merge.whenNotMatchedInsertAll().execute()


_ADD = {"event_count": "t.event_count + s.event_count",
        "total_estimated_resolution_time": "t.total_estimated_resolution_time + s.total_estimated_resolution_time"}


def process_batch(events: DataFrame, batch_id: int, settings: Settings, writer: str) -> dict:
    spark = events.sparkSession
    events = events.persist()
    try:
        _merge(spark, settings, GOLD_STATUS_BY_LOCATION, T.status_by_location(events), writer, batch_id, _ADD)
        _merge(spark, settings, GOLD_STATUS_BY_MINUTE, T.status_by_minute(events), writer, batch_id, {
            **_ADD,
            "max_estimated_resolution_time": "greatest(t.max_estimated_resolution_time, s.max_estimated_resolution_time)",
            "avg_estimated_resolution_time": "(t.total_estimated_resolution_time + s.total_estimated_resolution_time)"
                                             " / (t.event_count + s.event_count)",
        })
        state = storage.read(spark, settings, GOLD_SERVER_STATE.name)
        open_incidents = storage.read(spark, settings, GOLD_INCIDENTS.name).where("is_open")
        new_state, incidents = T.server_timeline(events, state, open_incidents)
        # Pin both to the state before this batch, then write.
        new_state, incidents = new_state.localCheckpoint(), incidents.localCheckpoint()
        _merge(spark, settings, GOLD_INCIDENTS, incidents, writer, batch_id)
        _merge(spark, settings, GOLD_SERVER_STATE, new_state, writer, batch_id)
        n = events.count()
        return {"rows_in": n, "rows_out": n,
                "table_version": storage.version(spark, settings, GOLD_STATUS_BY_LOCATION.name)}
    finally:
        events.unpersist()


def start(spark: SparkSession, settings: Settings, trigger: dict, on_batch) -> StreamingQuery:
    writer: list[str] = []

    def run(df: DataFrame, batch_id: int) -> None:
        writer[:] = writer or [storage.query_id(df.sparkSession, settings, QUERY)]
        on_batch(QUERY, batch_id, process_batch(df, batch_id, settings, writer[0]))

    return (storage.stream_from(spark, settings, SILVER_EVENTS.name, QUERY)
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
