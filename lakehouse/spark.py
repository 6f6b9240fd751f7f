"""The one place a Spark session is built: Delta Lake and the Kafka connector, quiet logs.

Jars come the standard way, ``spark.jars.packages`` through Ivy, into
``$LAKEHOUSE_CACHE/ivy/jars``; later sessions pass those files as ``spark.jars``, which
starts faster, prints no resolution report and works offline. Our Ivy settings name Maven Central
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


def _packages() -> str:
    return f"{DELTA_PACKAGE},{SPARK_KAFKA_PACKAGE}"


def _resolved_jars(settings: Settings) -> list[str] | None:
    """The jars Ivy resolved earlier for exactly these packages, or None."""
    jars = settings.cache / "ivy" / "jars"
    marker = jars / ".resolved"
    if marker.exists() and marker.read_text() == _packages():
        return sorted(str(p) for p in jars.glob("*.jar"))
    return None


def get_spark(app_name: str = "lakehouse", settings: Settings | None = None, **conf: str):
    from pyspark.sql import SparkSession

    from lakehouse.stack import check_java

    settings = settings or get_settings()
    check_java()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.ui.enabled", str(settings.spark_ui).lower())
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", os.environ.get("SPARK_DRIVER_MEMORY", "2g"))
        .config("spark.ui.showConsoleProgress", "false")
        # Our tables are small per commit: Delta's default of 50 snapshot partitions costs seconds.
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.databricks.delta.optimizeWrite.enabled", "true")
        .config("spark.databricks.delta.autoCompact.enabled", "true")
    )
    jars = _resolved_jars(settings)
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    else:
        for stale in (settings.cache / "ivy" / "jars").glob("*.jar"):
            stale.unlink()
        builder = (builder.config("spark.jars.packages", _packages())
                   .config("spark.jars.ivy", str(settings.cache / "ivy"))
                   .config("spark.jars.ivySettings", _ivy_settings(settings)))
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
    if not jars:
        (settings.cache / "ivy" / "jars" / ".resolved").write_text(_packages())
    return spark
