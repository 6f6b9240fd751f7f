"""Bronze: Kafka records as received. Nothing is parsed or dropped here."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakehouse.tables import BRONZE_EVENTS


def value_text() -> F.Column:
    """``value`` decoded as UTF-8, invalid bytes replaced: bronze's ``value_text``."""
    return F.expr("make_valid_utf8(CAST(value AS STRING))")


def to_bronze(kafka: DataFrame) -> DataFrame:
    """Kafka source rows -> bronze.events rows (one per record)."""
    return kafka.select(
        "key",
        "value",
        value_text().alias("value_text"),
        "topic",
        "partition",
        "offset",
        F.col("timestamp").alias("kafka_timestamp"),
        "headers",
        F.current_timestamp().alias("ingested_at"),
    ).withColumn("ingest_date", F.to_date("ingested_at")).select(*BRONZE_EVENTS.column_names)
