"""Bronze's streaming edge: Kafka -> bronze.events with Delta's streaming sink.

The checkpoint and Delta's own transaction make it exactly once across restarts.
"""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from lakehouse.bronze.transforms import to_bronze
from lakehouse.settings import Settings
from lakehouse.tables import BRONZE_EVENTS

SOURCE = None  # reads Kafka
QUERY = "bronze"


def start(spark: SparkSession, settings: Settings, trigger: dict, on_batch=None) -> StreamingQuery:
    """``on_batch`` is unused: the Delta sink reports through the query listener."""
    kafka = (spark.readStream.format("kafka")
             .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
             .option("subscribe", settings.kafka_topic)
             .option("startingOffsets", "earliest")
             .option("includeHeaders", "true")
             .option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
             .load())
    return (to_bronze(kafka).writeStream.format("delta").queryName(QUERY)
            .outputMode("append")
            .partitionBy(*BRONZE_EVENTS.partition_by)
            .option("checkpointLocation", settings.checkpoint_path(QUERY))
            .trigger(**trigger)
            .start(settings.table_path(BRONZE_EVENTS.name)))
