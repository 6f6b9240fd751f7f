"""Gold: what operators look at, computed from silver events.

Pure ``DataFrame -> DataFrame`` functions. Each works on any set of silver events: a
micro-batch (then ``gold.stream`` merges the result into the table) or the whole of
silver (then replay writes it as is). Additive measures make both give the same table.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from lakehouse.tables import GOLD_INCIDENTS, GOLD_SERVER_STATE, GOLD_STATUS_BY_LOCATION, GOLD_STATUS_BY_MINUTE

GREEN = "Green"


def status_by_location(events: DataFrame) -> DataFrame:
    """The original project's aggregate: events and total resolution time per place and status."""
    return (events.groupBy(*GOLD_STATUS_BY_LOCATION.keys)
            .agg(F.count(F.lit(1)).alias("event_count"),
                 F.sum("estimated_resolution_time").cast("bigint").alias("total_estimated_resolution_time"))
            .select(*GOLD_STATUS_BY_LOCATION.column_names))


def status_by_minute(events: DataFrame) -> DataFrame:
    """One-minute event-time windows by status colour and server type."""
    return (events.groupBy(F.window("event_time", "1 minute").alias("w"), "status_color", "server_type")
            .agg(F.count(F.lit(1)).alias("event_count"),
                 F.sum("estimated_resolution_time").cast("bigint").alias("total_estimated_resolution_time"),
                 F.max("estimated_resolution_time").alias("max_estimated_resolution_time"))
            .select(F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"), "*")
            .withColumn("avg_estimated_resolution_time",
                        F.col("total_estimated_resolution_time") / F.col("event_count"))
            .select(*GOLD_STATUS_BY_MINUTE.column_names))


_SERVER_ATTRS = ("server_type", "country_code", "country_name", "city")


def server_timeline(events: DataFrame, state: DataFrame, open_incidents: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Advance servers' state and incidents by new events.

    ``state`` and ``open_incidents`` are the current gold.server_state and open
    gold.incidents rows (empty for a rebuild). Only v1 events with a server id count, in
    event-time order; late events and events older than a server's latest known event are
    left out (they still count in the aggregates). Returns (server_state rows to upsert,
    incident rows to upsert).
    """
    return from_timeline(timeline(events, state), open_incidents)


def timeline(events: DataFrame, state: DataFrame) -> DataFrame:
    """The first half of ``server_timeline``: the touched servers' prior state and their new
    events, in order, with status changes and incident runs marked. The stream materializes
    it once, as both outputs read it."""
    prior = state.select("server_id", F.col("last_event_time").alias("_prior_last"))
    new = (events.where("server_id IS NOT NULL AND NOT is_late")
           .join(prior, "server_id", "left")
           .where("_prior_last IS NULL OR event_time >= _prior_last")  # a tie: the later arrival, as in a rebuild
           .select("server_id", *_SERVER_ATTRS, "status_color", "severity_level", "event_time",
                   F.col("event_id").alias("last_event_id"), "estimated_resolution_time",
                   F.lit(False).alias("is_prior"), F.lit(None).cast("timestamp").alias("prior_since"),
                   "partition", "offset"))
    touched = new.select("server_id").distinct()
    prior_rows = (state.join(touched, "server_id")
                  .select("server_id", *_SERVER_ATTRS, "status_color", "severity_level",
                          F.col("last_event_time").alias("event_time"), "last_event_id", "estimated_resolution_time",
                          F.lit(True).alias("is_prior"), F.col("status_since").alias("prior_since"),
                          F.lit(-1).alias("partition"), F.lit(-1).cast("bigint").alias("offset")))
    w = Window.partitionBy("server_id").orderBy("event_time", "partition", "offset")
    running = w.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    # Layers of columns, each reading the one before (one plan analysis per layer, not per column).
    return (new.unionByName(prior_rows)
            .withColumn("_prev", F.lag("status_color").over(w))
            .withColumns({
                "_change": F.expr("CASE WHEN is_prior THEN prior_since "
                                  "WHEN _prev IS NULL OR _prev != status_color THEN event_time END"),
                "_started": F.expr(f"NOT is_prior AND status_color != '{GREEN}' AND (_prev IS NULL OR _prev = '{GREEN}')"),
                "_ended": F.expr(f"NOT is_prior AND status_color = '{GREEN}' AND _prev IS NOT NULL AND _prev != '{GREEN}'"),
            })
            .withColumns({
                "status_since": F.last("_change", ignorenulls=True).over(running),
                "_run": F.sum(F.col("_started").cast("int")).over(running),
            }))


def from_timeline(rows: DataFrame, open_incidents: DataFrame) -> tuple[DataFrame, DataFrame]:
    """The second half of ``server_timeline``: (server_state rows, incident rows) from ``timeline``."""
    latest = Window.partitionBy("server_id").orderBy(F.desc("event_time"), F.desc("partition"), F.desc("offset"))
    new_state = (rows.where("NOT is_prior").withColumn("_n", F.row_number().over(latest)).where("_n = 1")
                 .withColumnRenamed("event_time", "last_event_time")
                 .select(*GOLD_SERVER_STATE.column_names))

    red = f"status_color != '{GREEN}'"
    spans = (rows.where(f"NOT is_prior AND ({red} OR _ended)")
             .groupBy("server_id", "_run")
             .agg(*[F.max_by(c, "event_time").alias(c) for c in _SERVER_ATTRS],
                  F.min(F.when(F.expr(red), F.col("event_time"))).alias("_start"),
                  F.min(F.when(F.col("_ended"), F.col("event_time"))).alias("ended_at"),
                  F.min(F.when(F.expr(red), F.col("severity_level"))).alias("_worst")))
    opened = open_incidents.select("server_id", F.col("incident_id").alias("_open_id"),
                                   F.col("started_at").alias("_open_start"), F.col("worst_severity").alias("_open_worst"))
    incidents = (spans.join(opened, "server_id", "left")
                 .withColumns({
                     # run 0 continues the incident that was open before these events
                     "started_at": F.expr("CASE WHEN _run = 0 THEN coalesce(_open_start, _start) ELSE _start END"),
                     "worst_severity": F.expr(
                         "CASE WHEN _run = 0 THEN least(coalesce(_open_worst, _worst), coalesce(_worst, _open_worst)) "
                         "ELSE _worst END"),
                 })
                 .where("started_at IS NOT NULL")
                 .withColumns({
                     "incident_id": F.expr(
                         "CASE WHEN _run = 0 AND _open_id IS NOT NULL THEN _open_id "
                         "ELSE concat(server_id, '@', date_format(started_at, \"yyyy-MM-dd'T'HH:mm:ss.SSS'Z'\")) END"),
                     "duration_seconds": F.expr("timestampdiff(SECOND, started_at, ended_at)"),
                     "is_open": F.col("ended_at").isNull(),
                 })
                 .select(*GOLD_INCIDENTS.column_names))
    return new_state, incidents
