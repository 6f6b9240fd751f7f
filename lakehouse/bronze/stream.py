"""Bronze's streaming edge: Kafka -> bronze.events, one append per micro-batch.

``foreachBatch`` appends each batch with ``storage.append_once`` (delta-rs on a local disk:
a Spark append costs ~1 s per commit here, mostly fixed, and bronze commits every trigger).
The checkpoint holds the Kafka offsets; the append carries the batch id under the query's
id, the same transaction id Delta's streaming sink (which wrote bronze before) commits, so a
batch re-run after a crash is not written twice, whichever of the two wrote it first.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from lakehouse import storage
from lakehouse.bronze.transforms import to_bronze
from lakehouse.settings import Settings
from lakehouse.tables import BRONZE_EVENTS

SOURCE = None  # reads Kafka
QUERY = "bronze"


def start(spark: SparkSession, settings: Settings, trigger: dict, on_batch=None) -> StreamingQuery:
    """``on_batch`` is unused: the query listener reports bronze's batches."""
    writer: list[str] = []

    def run(rows: DataFrame, batch_id: int) -> None:
        writer[:] = writer or [storage.query_id(rows.sparkSession, settings, QUERY)]
        storage.append_once(rows, settings, BRONZE_EVENTS.name, writer[0], batch_id, app_id=writer[0])

    kafka = (spark.readStream.format("kafka")
             .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
             .option("subscribe", settings.kafka_topic)
             .option("startingOffsets", "earliest")
             .option("includeHeaders", "true")
             .option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
             .load())
    return (to_bronze(kafka).writeStream.queryName(QUERY).foreachBatch(run)
            .option("checkpointLocation", settings.checkpoint_path(QUERY))
            .trigger(**trigger).start())
