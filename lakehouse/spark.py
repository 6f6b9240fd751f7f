"""The one place a Spark session is built: Delta Lake and the Kafka connector, quiet logs.

The connector jars (Delta, Kafka) are resolved with Maven like the broker's
(``lakehouse.jars``) and passed as ``spark.jars``: resolved once, then offline. Spark's own
jars come with the pyspark package.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from lakehouse.jars import resolve
from lakehouse.settings import (
    DELTA_PACKAGE,
    SPARK_KAFKA_PACKAGE,
    SPARK_TOKEN_PROVIDER,
    SPARK_TOKEN_PROVIDER_PACKAGE,
    Settings,
    get_settings,
)


def _artifact(jar: Path) -> str:
    """hadoop-client-api-3.4.2.jar -> hadoop-client-api"""
    return re.sub(r"-\d[^-]*(-[A-Za-z0-9.]+)?\.jar$", "", jar.name)


def spark_jars(settings: Settings) -> list[str]:
    """Delta and the Kafka connector with those runtime dependencies that Spark does not
    ship itself (Spark's own versions win, as with ``spark.jars.packages``)."""
    import pyspark

    jars = resolve(settings, "spark-connectors", {
        DELTA_PACKAGE: (),
        SPARK_KAFKA_PACKAGE: (SPARK_TOKEN_PROVIDER,),
        SPARK_TOKEN_PROVIDER_PACKAGE: (),
    })
    shipped = {_artifact(j) for j in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    return [str(j) for j in jars if _artifact(j) not in shipped]


def get_spark(app_name: str = "lakehouse", settings: Settings | None = None, **conf: str):
    from pyspark.sql import SparkSession

    from lakehouse.stack import check_java

    settings = settings or get_settings()
    check_java()
    # Python workers (what Spark runs Python code in) use this interpreter and its packages,
    # not whichever `python3` comes first on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if settings.spark_master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.jars", ",".join(spark_jars(settings)))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.ui.enabled", str(settings.spark_ui).lower())
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", os.environ.get("SPARK_DRIVER_MEMORY", "2g"))
        # Our tables are small per commit: Delta's default of 50 snapshot partitions costs seconds
        # (1 against 2 measured 5-10% faster per micro-batch here).
        .config("spark.databricks.delta.snapshotPartitions", "1")
        # VACUUM lists files with this many tasks (Spark's default: 10,000, ~30 s per table here).
        .config("spark.sql.sources.parallelPartitionDiscovery.parallelism", str(settings.spark_shuffle_partitions))
        # Our queries are stateless (Kafka -> Delta, Delta -> foreachBatch): let the micro-batches'
        # jobs (silver's split, gold's MERGEs) use adaptive execution, which Spark turns off for
        # streaming unless told (measured: a warm 2,000-event batch ~20% faster with it).
        .config("spark.sql.adaptive.streaming.stateless.enabled", "true")
        # Compiled query code, kept per distinct source: one refining micro-batch compiles ~110
        # classes (silver ~40, gold ~70), more than the default 100 entries, so the cache thrashed
        # and every batch compiled them all again (and ran them cold). Measured on warm 2,000-event
        # batches: no compilation after the first two, silver 1.3 -> 1.0 s, gold 1.25 -> 0.87 s.
        .config("spark.sql.codegen.cache.maxEntries", "1000")
        # toPandas through Arrow: the data-quality monitor hands GX its (sampled) views as pandas
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.databricks.delta.optimizeWrite.enabled", "true")
        .config("spark.databricks.delta.autoCompact.enabled", "true")
    )
    # Whole-stage code generation compiles silver's parse and rules into one Java method of ~18 KB
    # of bytecode. HotSpot leaves methods over 8,000 bytes to its interpreter (DontCompileHugeMethods,
    # the limit Spark's spark.sql.codegen.hugeMethodLimit documents): measured on 200,000 events,
    # silver with its rules 7.3 -> 5.5 s once the JVM may compile them.
    for key in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions"):
        if key not in conf:
            builder = builder.config(key, "-XX:-DontCompileHugeMethods")
    if settings.spark_master.startswith("local"):
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
