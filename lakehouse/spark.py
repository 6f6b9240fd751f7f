"""The one place a Spark session is built: Delta Lake and the Kafka connector, quiet logs.

Jars come the standard way, ``spark.jars.packages`` through Ivy, cached under
``$LAKEHOUSE_CACHE/ivy`` so later runs work offline. Our Ivy settings name Maven Central
alone: Spark's default chain also reads ``~/.m2``, where a pom without its jar (left by an
unrelated Maven run) makes the whole resolution fail.
"""

from __future__ import annotations

import os

from lakehouse.settings import DELTA_PACKAGE, SPARK_KAFKA_PACKAGE, ConfigError, Settings, get_settings


IVY_SETTINGS = """<ivysettings>
  <settings defaultResolver="central"/>
  <caches defaultCacheDir="{cache}"/>
  <resolvers>
    <ibiblio name="central" m2compatible="true" root="https://repo1.maven.org/maven2/"/>
  </resolvers>
</ivysettings>
"""


def _ivy_settings(settings: Settings) -> str:
    ivy = settings.cache / "ivy"
    ivy.mkdir(parents=True, exist_ok=True)
    path = ivy / "ivysettings.xml"
    text = IVY_SETTINGS.format(cache=ivy / "cache")
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return str(path)


def get_spark(app_name: str = "lakehouse", settings: Settings | None = None, **conf: str):
    from pyspark.sql import SparkSession

    from lakehouse.stack import check_java

    settings = settings or get_settings()
    check_java()
    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.jars.packages", f"{DELTA_PACKAGE},{SPARK_KAFKA_PACKAGE}")
        .config("spark.jars.ivySettings", _ivy_settings(settings))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.ui.enabled", str(settings.spark_ui).lower())
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", os.environ.get("SPARK_DRIVER_MEMORY", "2g"))
        .config("spark.sql.streaming.stateStore.providerClass",
                "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider")
        .config("spark.databricks.delta.optimizeWrite.enabled", "true")
        .config("spark.databricks.delta.autoCompact.enabled", "true")
    )
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as e:  # Ivy failure surfaces as a JVM start-up error
        if "unresolved dependency" in str(e) or "java gateway" in str(e).lower():
            raise ConfigError(f"cannot resolve {DELTA_PACKAGE} or {SPARK_KAFKA_PACKAGE} "
                              f"(Ivy cache: {settings.cache / 'ivy'}); check the network or the cache") from None
        raise
    spark.sparkContext.setLogLevel("WARN")
    return spark
