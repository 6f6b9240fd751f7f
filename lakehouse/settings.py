"""Every setting of the project, read from the environment in one place.

Each variable is documented in docs/configuration.md; defaults work on one machine.
Modules call ``get_settings()`` instead of reading ``os.environ`` themselves, so a test
can point everything at its own stack by changing the environment.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Pinned engine versions (see docs/architecture.md for why these exact ones).
KAFKA_VERSION = "4.1.1"
SPARK_KAFKA_PACKAGE = "org.apache.spark:spark-sql-kafka-0-10_2.13:4.1.3"
# 4.1.3's Kafka connector fixes a crash on restart (SPARK-57438: a NullPointerException in
# the source's metrics when a query resumes an uncommitted batch). Its small token-provider
# dependency is not served at 4.1.3 by our registry, so 4.1.1's, the same code, stands in.
SPARK_TOKEN_PROVIDER = "org.apache.spark:spark-token-provider-kafka-0-10_2.13"
SPARK_TOKEN_PROVIDER_PACKAGE = f"{SPARK_TOKEN_PROVIDER}:4.1.1"
# The Python delta-spark is 4.4.1; Maven Central serves no 4.4.1 jar for Spark 4.1, so
# the JVM side uses 4.4.0, the newest Delta jar built for Spark 4.1.
DELTA_PACKAGE = "io.delta:delta-spark_4.1_2.13:4.4.0"


class ConfigError(Exception):
    """A setting or a service is wrong; the message says what and how to fix it."""


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _byte_size(name: str, default: str) -> str:
    """A size as Spark and Delta write it (``16m``, ``512k``, ``1g``, a plain number of bytes),
    checked here: Delta reads it only when the stream starts, with a stack trace."""
    raw = (os.environ.get(name) or default).strip()
    if not re.fullmatch(r"(?i)[1-9]\d*(b|kb?|mb?|gb?|tb?|pb?)?", raw):
        raise ConfigError(f"{name}={raw!r} is not a size: write a positive number of bytes with an optional "
                          f"unit k, m or g (e.g. 16m)")
    return raw


@dataclass(frozen=True)
class Settings:
    home: Path
    root: str
    cache: Path
    kafka_bootstrap_servers: str
    kafka_controller_port: int
    kafka_topic: str
    kafka_partitions: int
    database_url: str | None
    database_reader_url: str | None
    pg_port: int
    spark_master: str
    spark_ui: bool
    spark_shuffle_partitions: int
    trigger_seconds: float
    max_offsets_per_trigger: int
    refine_max_bytes_per_trigger: str
    seed_timezone: str
    late_after: str
    dedup_horizon_hours: int
    log_level: str
    # Time travel promised for every table, in days (fractions allowed): `lakehouse maintain`
    # never vacuums or expires log entries a version inside this window needs.
    time_travel_days: float = 7.0

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)[1])

    @property
    def kafka_host(self) -> str:
        return self.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)[0]

    @property
    def external_postgres(self) -> bool:
        return bool(self.database_url)

    @property
    def external_kafka(self) -> bool:
        """KAFKA_EXTERNAL=1, several brokers, or one that is not on this machine: not ours to start."""
        brokers = self.kafka_bootstrap_servers.split(",")
        return (os.environ.get("KAFKA_EXTERNAL") == "1" or len(brokers) > 1
                or self.kafka_host not in ("127.0.0.1", "localhost", "[::1]"))

    def table_path(self, table: str) -> str:
        """Storage location of a table named ``layer.name`` under LAKEHOUSE_ROOT."""
        return f"{self.root.rstrip('/')}/{table.replace('.', '/')}"

    def checkpoint_path(self, query: str) -> str:
        return f"{self.root.rstrip('/')}/_checkpoints/{query}"

    def dedup_since(self) -> dt.datetime:
        """The start of the de-duplication horizon now: silver holds an event once since then."""
        return dt.datetime.now(dt.UTC) - dt.timedelta(hours=self.dedup_horizon_hours)


def is_local(location: str) -> bool:
    """A table or checkpoint location on this machine's file system (a path or a file: URI)."""
    return "://" not in location.replace("file://", "", 1)


def local_location(location: str) -> str:
    """A local location (``is_local``) as a plain path."""
    return location.removeprefix("file://").removeprefix("file:")


def get_settings() -> Settings:
    home = Path(os.environ.get("LAKEHOUSE_HOME") or REPO_ROOT / "var").resolve()
    root = os.environ.get("LAKEHOUSE_ROOT") or str(home / "tables")
    return Settings(
        home=home,
        root=root,
        cache=Path(os.environ.get("LAKEHOUSE_CACHE") or Path.home() / ".cache" / "lakehouse"),
        kafka_bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092",
        kafka_controller_port=_int("KAFKA_CONTROLLER_PORT", 9093),
        kafka_topic=os.environ.get("KAFKA_TOPIC") or "server-live-status",
        kafka_partitions=_int("KAFKA_PARTITIONS", 3),
        database_url=os.environ.get("DATABASE_URL") or None,
        database_reader_url=os.environ.get("DATABASE_READER_URL") or None,
        pg_port=_int("LAKEHOUSE_PG_PORT", 5432),
        spark_master=os.environ.get("SPARK_MASTER") or "local[*]",
        spark_ui=os.environ.get("SPARK_UI", "0") == "1",
        spark_shuffle_partitions=_int("SPARK_SHUFFLE_PARTITIONS", 4),
        trigger_seconds=_float("LAKEHOUSE_TRIGGER_SECONDS", 2.0),
        max_offsets_per_trigger=_int("LAKEHOUSE_MAX_OFFSETS_PER_TRIGGER", 200_000),
        refine_max_bytes_per_trigger=_byte_size("LAKEHOUSE_REFINE_MAX_BYTES_PER_TRIGGER", "16m"),
        seed_timezone=os.environ.get("LAKEHOUSE_SEED_TIMEZONE") or "UTC",
        late_after=os.environ.get("LAKEHOUSE_LATE_AFTER") or "1 HOUR",
        dedup_horizon_hours=_int("LAKEHOUSE_DEDUP_HORIZON_HOURS", 48),
        log_level=(os.environ.get("LAKEHOUSE_LOG_LEVEL") or "INFO").upper(),
        time_travel_days=_time_travel_days(),
    )


def _time_travel_days() -> float:
    days = _float("LAKEHOUSE_TIME_TRAVEL_DAYS", 7.0)
    if not 0 <= days <= 36500:
        raise ConfigError(f"LAKEHOUSE_TIME_TRAVEL_DAYS={days:g} must be between 0 and 36500 days")
    return days
