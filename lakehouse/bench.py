"""``lakehouse bench``: throughput, freshness and cost, measured in one run on a private stack.

Everything runs on a Kafka broker and a PostgreSQL server of its own (a temporary
``LAKEHOUSE_HOME``, free ports), never on a running ``make stream``, and is torn down at
the end. The figures, in the order they are measured:

1. producer: the simulator (``lakehouse simulate``'s own code path: ``simulator.cli.run``
   and ``KafkaSink``) pre-loads the topic as fast as it can; events/s, plus where the
   time goes (the event generator alone, and a cProfile of a short run, every thread).
2. ceiling: Spark's Kafka source reading that topic into a ``noop`` sink (availableNow).
3. pipeline catch-up: bronze, silver and gold run one after the other (availableNow)
   over the pre-loaded topic, then the PostgreSQL sync; each as events/s and as a
   fraction of the ceiling.
4. baseline: the original project's design, re-created minimally here (Kafka -> parse
   JSON -> raw JSON files + a count/sum by city and status in update mode appended to
   PostgreSQL from foreachBatch): catch-up throughput, freshness with its 20 s trigger
   and with a 2 s trigger, and how much its appended totals over-count.
5. freshness: our pipeline running continuously while the simulator sends at a steady
   rate; per event, the time from its creation to its effect being visible in PostgreSQL
   and in the dashboard's JSON API; and a per-hop model of where that time goes.
6. dashboard: JSON API latency at 50 concurrent clients.
7. cost: peak memory per process, disk bytes per million events per layer, files per table.

It fails (exit 1) only when something cannot run; goals are reported as met or missed.
Results go to ``--out`` (``bench-results/results.json``) and to docs/benchmarks.md.
``python -m lakehouse.bench produce|dashboard ...`` are the child processes it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import json
import logging
import os
import platform
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from lakehouse.settings import DELTA_PACKAGE, KAFKA_VERSION, REPO_ROOT, ConfigError, Settings, get_settings

log = logging.getLogger("lakehouse.bench")

TOPIC = "bench-events"
PROFILE_TOPIC = "bench-profile"
FAULT_FRACTION = 0.01
# Every fault kind but `oversize`: at 1% faults one record in a thousand would be a ~1 MB
# message, about 70% of all bytes, and the benchmark would measure moving padding around.
FAULT_KINDS = ("malformed_json", "truncated", "missing_field", "wrong_type", "unknown_status", "duplicate",
               "late_event", "future_event", "non_utf8")
PRODUCER_GOAL = 50_000  # events/s the project originally aimed for
CONCURRENCY = 50
API_PATHS = ("/api/overview?range=1h", "/api/servers?limit=50", "/api/incidents?range=1h",
             "/api/pipeline?range=1h", "/api/status-by-minute?range=1h", "/api/pivot", "/api/servers/facets")
PG_POLL_S = 0.2
API_POLL_S = 0.25
GOAL_CEILING_FRACTION = 1 / 3
GOAL_FRESHNESS_P95_S = 5.0  # the benchmarks' goal
GOAL_DASHBOARD_FRESHNESS_P95_S = 10.0  # the dashboard's goal, with the default triggers
GOAL_FRESHNESS_RATE = 1000
GOAL_API_P95_MS = 100.0
GOAL_CHECKS_COST = 0.20
MONITOR_REPEATS = 3  # monitor passes of each kind; the least CPU counts


@dataclass(frozen=True)
class Profile:
    events: int  # pre-loaded events for producer, ceiling, catch-up and baseline
    profile_events: int  # events of the profiled producer run
    rates: tuple[int, ...]  # steady rates of the freshness runs (events/s)
    fresh_seconds: float  # how long each freshness run sends
    baseline_seconds: float  # how long the baseline freshness run sends
    baseline_triggers: tuple[float, float]  # its long (original) and short trigger, seconds
    drain_seconds: float  # after sending stops, how long to wait for the last events
    requests: int  # dashboard requests at CONCURRENCY clients
    single_requests: int  # dashboard requests by one client, for the service time
    warmup_seconds: float = 0.0  # freshness: sent at the rate before the measured window, not measured


PROFILES = {
    "full": Profile(1_000_000, 50_000, (1000, 10_000), 90, 90, (20, 2), 120, 5000, 200, warmup_seconds=30),
    "quick": Profile(20_000, 10_000, (1000,), 20, 25, (20, 2), 30, 1000, 70, warmup_seconds=10),
    "tiny": Profile(2000, 1000, (100,), 5, 5, (2, 1), 15, 100, 7, warmup_seconds=2),  # the smoke test's
}


class BenchError(Exception):
    """A measurement could not run."""


# --- small helpers ----------------------------------------------------------------

def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _pct(values, qs=(50, 95, 99)) -> dict:
    import numpy as np

    if len(values) == 0:
        return {f"p{q}": None for q in qs}
    return {f"p{q}": round(float(np.percentile(values, q)), 4) for q in qs}


def _fmt_s(x) -> str:
    return "n/a" if x is None else (f"{x:.2f} s" if x < 100 else f"{x:.0f} s")


def _fmt_ms(x) -> str:
    """Milliseconds, shown in seconds from 1,000 ms up."""
    return "n/a" if x is None else f"{x:.0f} ms" if x < 1000 else _fmt_s(x / 1000)


def _fmt_bytes(x) -> str:
    if x is None:
        return "n/a"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(x) < 1024 or unit == "GB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return str(x)


def _sim_args(argv: list[str]) -> argparse.Namespace:
    """The simulator's own argument parsing, so the run is exactly a `lakehouse simulate`."""
    from simulator.cli import add_arguments

    parser = argparse.ArgumentParser(prog="lakehouse simulate")
    add_arguments(parser)
    return parser.parse_args(argv)


def _progress(total: float, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="s", disable=None, file=sys.stderr,
                bar_format="{desc}: {n:.0f}/{total:.0f} s |{bar}| {postfix}")


# --- the private stack ------------------------------------------------------------

PRIVATE_VARS = ("LAKEHOUSE_HOME", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CONTROLLER_PORT", "LAKEHOUSE_PG_PORT",
                "KAFKA_TOPIC", "LAKEHOUSE_ROOT", "DATABASE_URL", "DATABASE_READER_URL")


OWNER_FILE = "bench.pid"  # in a private home: the pid of the bench that made it


def reap_stale_homes() -> None:
    """Private stacks of earlier bench runs that were killed (SIGKILL leaves no chance to clean up):
    homes under the temp folder with our prefix whose bench process is gone are stopped and removed."""
    import dataclasses

    from lakehouse import stack

    for home in Path(tempfile.gettempdir()).glob("lakehouse-bench-*"):
        owner = home / OWNER_FILE
        try:
            pid = int(owner.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # not made by this code, or still being made
        if stack.pid_alive(pid):
            continue
        log.info("removing the private stack of an earlier bench run that was stopped short (%s)", home)
        with contextlib.suppress(Exception):
            stack.down(dataclasses.replace(get_settings(), home=home, root=str(home / "tables"), database_url=None))
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def private_stack():
    """Kafka and PostgreSQL in a temporary LAKEHOUSE_HOME on free ports, like the tests' stack."""
    from lakehouse import stack

    saved = {k: os.environ.get(k) for k in PRIVATE_VARS}
    reap_stale_homes()
    home = Path(tempfile.mkdtemp(prefix="lakehouse-bench-"))
    home.chmod(0o755)  # PostgreSQL runs as a non-root user when we are root
    (home / OWNER_FILE).write_text(str(os.getpid()))
    kafka_port, controller_port, pg_port = _free_ports(3)
    for k in ("LAKEHOUSE_ROOT", "DATABASE_URL", "DATABASE_READER_URL"):
        os.environ.pop(k, None)
    os.environ.update({"LAKEHOUSE_HOME": str(home), "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
                       "KAFKA_CONTROLLER_PORT": str(controller_port), "LAKEHOUSE_PG_PORT": str(pg_port),
                       "KAFKA_TOPIC": TOPIC})
    settings = get_settings()
    try:
        started = time.monotonic()
        log.info("starting a private Kafka and PostgreSQL in %s", home)
        stack.up(settings)
        log.info("private stack up in %.1fs (kafka %s, postgres 127.0.0.1:%s)", time.monotonic() - started,
                 settings.kafka_bootstrap_servers, pg_port)
        yield settings
    finally:
        log.info("stopping the private stack")
        try:
            stack.down(settings)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            shutil.rmtree(home, ignore_errors=True)


def topic_offsets(settings: Settings, topic: str) -> tuple[int, dict[int, int]]:
    """(records in the topic, end offset per partition)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        end, begin = consumer.end_offsets(parts), consumer.beginning_offsets(parts)
    finally:
        consumer.close()
    return sum(end.values()) - sum(begin.values()), {tp.partition: o for tp, o in end.items()}


# --- memory and CPU of every process ----------------------------------------------

class ProcessWatch(threading.Thread):
    """Samples each process of the stack every second: peak memory and CPU seconds.

    JVMs and Python processes: RSS. PostgreSQL (a process per connection): the sum of PSS
    over the postmaster and its children, so that shared buffers are counted once."""

    def __init__(self, settings: Settings):
        super().__init__(name="bench-process-watch", daemon=True)
        self.settings = settings
        self.stopping = threading.Event()
        self.extra: dict[str, int] = {}  # label -> pid of children started later
        self.peak: dict[str, int] = {}
        self.cpu: dict[str, float] = {}
        self._spark_pid: int | None = None

    def add(self, label: str, pid: int) -> None:
        self.extra[label] = pid

    def _pids(self) -> dict[str, list[int]]:
        import psutil

        from lakehouse.stack import Kafka, Postgres

        me = psutil.Process()
        pids = {"python: bench + pipeline driver": [me.pid]}
        kafka = Kafka(self.settings).running_pid()
        if kafka:
            pids["kafka broker (JVM)"] = [kafka]
        pg = Postgres(self.settings).running_pid()
        if pg:
            try:
                pids["postgresql (all processes)"] = [pg] + [c.pid for c in psutil.Process(pg).children(recursive=True)]
            except psutil.Error:
                pass
        if self._spark_pid is None or not psutil.pid_exists(self._spark_pid):
            self._spark_pid = spark_jvm_pid()
        if self._spark_pid:
            pids["spark driver (JVM)"] = [self._spark_pid]
        for label, pid in self.extra.items():
            pids[label] = [pid]
        return pids

    def sample(self) -> None:
        import psutil

        for label, pids in self._pids().items():
            mem, cpu = 0, 0.0
            for pid in pids:
                try:
                    p = psutil.Process(pid)
                    with p.oneshot():
                        if label.startswith("postgresql"):
                            info = p.memory_full_info()
                            mem += getattr(info, "pss", info.rss)
                        else:
                            mem += p.memory_info().rss
                        t = p.cpu_times()
                        cpu += t.user + t.system
                except psutil.Error:
                    continue
            if mem:
                self.peak[label] = max(self.peak.get(label, 0), mem)
                self.cpu[label] = max(self.cpu.get(label, 0.0), cpu)

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a sampling hiccup must not stop the bench
                log.debug("process sampling failed", exc_info=True)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        with contextlib.suppress(Exception):
            self.sample()


# --- 1. producer -------------------------------------------------------------------

def simulate(settings: Settings, topic: str, events: int, seed: int) -> dict:
    """`lakehouse simulate --rate 0 --events N --faults 0.01` (all kinds but oversize); its manifest."""
    from simulator.cli import run

    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.json"
        args = _sim_args(["--events", str(events), "--rate", "0", "--seed", str(seed),
                          "--faults", str(FAULT_FRACTION), "--fault-kinds", ",".join(FAULT_KINDS),
                          "--topic", topic, "--bootstrap-servers", settings.kafka_bootstrap_servers,
                          "--manifest", str(manifest)])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = run(args)
        if code != 0:
            raise BenchError(f"the simulator exited with {code}: {out.getvalue().strip()}")
        report = json.loads(manifest.read_text())
    report.pop("injected", None)
    return report


def _profile_category(key: tuple) -> str | None:
    filename, _, name = key
    text = f"{filename} {name}".lower()
    if any(w in name for w in ("poll", "select", "acquire", "sleep", "wait", "_wait_for_tstate_lock")):
        return None  # blocking waits: not where CPU time goes
    if "zlib" in text or "gzip" in text:
        return "gzip compression (kafka-python)"
    if "_socket" in text:
        return "socket calls (kafka-python network)"
    if "/kafka/" in filename:
        return "kafka-python client"
    if "json" in text:
        return "JSON encoding"
    if "/simulator/" in filename or "uuid" in text or "random" in text or "datetime" in text:
        return "event generation (simulator)"
    return "other"


def _short(key: tuple) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    for marker in ("site-packages/", "/lib/python3.11/", str(REPO_ROOT) + "/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    return f"{filename}:{line}({name})"


def profile_producer(settings: Settings, events: int) -> dict:
    """cProfile of a short simulator run, the producer's I/O thread included; blocking waits left out."""
    import cProfile
    import pstats

    profiles: list[cProfile.Profile] = []

    def boot(frame, event, arg):  # the first profile event of a new thread: profile that thread too
        sys.setprofile(None)
        p = cProfile.Profile()
        profiles.append(p)
        p.enable()

    main = cProfile.Profile()
    threading.setprofile(boot)
    main.enable()
    started = time.monotonic()
    try:
        simulate(settings, PROFILE_TOPIC, events, seed=2)
    finally:
        main.disable()
        threading.setprofile(None)
    elapsed = time.monotonic() - started
    stats = pstats.Stats(main)
    for p in profiles:
        with contextlib.suppress(TypeError):  # a thread that never ran Python code
            stats.add(p)
    rows = [(key, v[2], v[1]) for key, v in stats.stats.items()]  # (key, tottime, calls)
    busy = [(k, t, n) for k, t, n in rows if _profile_category(k) is not None]
    total = sum(t for _, t, _ in busy) or 1e-9
    by_category: dict[str, float] = {}
    for k, t, _ in busy:
        by_category[_profile_category(k)] = by_category.get(_profile_category(k), 0.0) + t
    top = sorted(busy, key=lambda r: -r[1])[:5]
    return {
        "events": events,
        "seconds_under_profiler": round(elapsed, 3),
        "cpu_seconds_profiled": round(total, 3),
        "top5": [{"function": _short(k), "self_seconds": round(t, 3), "share": round(t / total, 4), "calls": n}
                 for k, t, n in top],
        "by_category": {c: round(t / total, 4) for c, t in sorted(by_category.items(), key=lambda kv: -kv[1])},
    }


def generation_rate(events: int) -> float:
    """Events/s of the simulator's record stream alone (fleet model, JSON, faults), nothing sent."""
    from simulator.cli import _records

    args = _sim_args(["--events", str(events), "--rate", "0", "--seed", "3", "--faults", str(FAULT_FRACTION),
                      "--fault-kinds", ",".join(FAULT_KINDS)])
    started = time.perf_counter()
    n = sum(1 for r in _records(args, events) if r.fault != "duplicate")
    return n / (time.perf_counter() - started)


# --- Spark: listener, ceiling, catch-up ------------------------------------------------

def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _progress_listener():
    from pyspark.sql.streaming import StreamingQueryListener

    class Progress(StreamingQueryListener):
        """Every query progress event: which query and run, when it started, how long each part took."""

        def __init__(self):
            self.events: list[dict] = []

        def onQueryStarted(self, event):
            pass

        def onQueryProgress(self, event):
            p = event.progress
            self.events.append({"name": p.name, "run_id": str(p.runId), "batch_id": p.batchId,
                                "rows": p.numInputRows, "start": _epoch(p.timestamp),
                                "duration_ms": dict(p.durationMs)})

        def onQueryIdle(self, event):
            pass

        def onQueryTerminated(self, event):
            pass

        def batches(self, run_ids, with_rows: bool = True) -> list[dict]:
            return [e for e in list(self.events) if e["run_id"] in run_ids and (e["rows"] > 0 or not with_rows)]

    return Progress()


def _batch_summary(batches: list[dict]) -> dict:
    if not batches:
        return {"batches": 0, "rows": 0, "batch_seconds": 0.0, "parts_ms": {}}
    parts: dict[str, float] = {}
    for b in batches:
        for k, v in b["duration_ms"].items():
            if k != "triggerExecution":
                parts[k] = parts.get(k, 0) + v
    seconds = sum(b["duration_ms"].get("triggerExecution", 0) for b in batches) / 1000
    rows = sum(b["rows"] for b in batches)
    return {"batches": len(batches), "rows": rows, "batch_seconds": round(seconds, 3),
            "rows_per_batch_second": round(rows / seconds, 1) if seconds else None,
            "mean_batch_ms": round(statistics.mean(b["duration_ms"].get("triggerExecution", 0) for b in batches)),
            "parts_ms": {k: round(v) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}}


def _checkpoint(settings: Settings, name: str) -> str:
    return str(settings.home / "bench" / "_checkpoints" / name)


def kafka_stream(spark, settings: Settings, topic: str, starting: str = "earliest", limit: bool = True):
    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
              .option("subscribe", topic).option("startingOffsets", starting))
    if limit:  # as bronze reads it
        reader = reader.option("includeHeaders", "true").option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
    return reader.load()


class Steps:
    """Times the steps inside silver's and gold's micro-batches by wrapping, in this process only,
    the functions they call: ``process_batch`` of each, silver's appends (``storage.append_once``)
    and gold's MERGEs (``storage.merge_once``). Restored on exit; a function that is not there is
    simply not timed."""

    def __init__(self):
        self.entries: list[tuple[str, str, float, float]] = []  # (layer, step, seconds, ended at)
        self._saved: list[tuple[object, str, object]] = []

    def _wrap(self, module, name: str, label) -> None:
        original = getattr(module, name, None)
        if original is None:
            return

        def timed(*args, **kwargs):
            started = time.monotonic()
            try:
                return original(*args, **kwargs)
            finally:
                self.entries.append((*label(args), time.monotonic() - started, time.time()))

        self._saved.append((module, name, original))
        setattr(module, name, timed)

    def __enter__(self):
        from lakehouse import storage
        from lakehouse.gold import stream as gold
        from lakehouse.silver import stream as silver

        self._wrap(silver, "process_batch", lambda a: ("silver", "batch"))
        self._wrap(gold, "process_batch", lambda a: ("gold", "batch"))
        self._wrap(storage, "append_once", lambda a: (str(a[2]).split(".")[0], f"append {a[2]}") if len(a) > 2
                   else ("silver", "append"))
        self._wrap(storage, "merge_once", lambda a: ("gold", f"merge {getattr(a[2], 'name', '?')}" if len(a) > 2 else "merge"))
        return self

    def __exit__(self, *exc):
        for module, name, original in reversed(self._saved):
            setattr(module, name, original)
        self._saved.clear()

    def summary(self, since: float = 0.0) -> dict:
        """Seconds per layer and step since ``since`` (epoch); "other" is the batch minus the timed writes:
        silver's parsing, judging, splitting, checkpoints and counts; gold's aggregates and timeline."""
        out: dict[str, dict[str, float]] = {}
        for layer, step, seconds, ended in list(self.entries):
            if ended >= since:
                out.setdefault(layer, {}).setdefault(step, 0.0)
                out[layer][step] += seconds
        for layer, steps in out.items():
            if "batch" in steps:
                writes = sum(v for k, v in steps.items() if k != "batch")
                steps["other (compute)"] = max(0.0, steps["batch"] - writes)
            out[layer] = {k: round(v, 2) for k, v in sorted(steps.items(), key=lambda kv: -kv[1])}
        return out


def ceiling(spark, settings: Settings, topic: str, name: str) -> float:
    """Seconds for Spark's Kafka source to read the whole topic into a no-op sink (availableNow)."""
    started = time.monotonic()
    q = (kafka_stream(spark, settings, topic).writeStream.format("noop").queryName(name)
         .option("checkpointLocation", _checkpoint(settings, name)).trigger(availableNow=True).start())
    q.awaitTermination()
    return time.monotonic() - started


def catch_up(spark, settings: Settings, listener, steps: Steps, records: int, ceiling_rate: float) -> dict:
    """The bronze query, then the refining one (silver and gold), with availableNow, then the
    PostgreSQL sync. The refining query's time is split into silver (its silver batches' time)
    and gold (the rest)."""
    from lakehouse import pipeline
    from serving import sync

    out: dict = {"events": records, "layers": {}}
    since = time.time()
    run_ids = {}

    def figures(seconds: float) -> dict:
        return {"seconds": round(seconds, 3), "events_per_s": round(records / seconds, 1),
                "fraction_of_ceiling": round(records / seconds / ceiling_rate, 4)}

    for query in pipeline.QUERIES:
        log.info("catch-up: %s over %s records ...", query.QUERY, f"{records:,}")
        started, started_at = time.monotonic(), time.time()
        q = query.start(spark, settings, {"availableNow": True}, lambda *a: None)
        q.awaitTermination()
        seconds = time.monotonic() - started
        if query.QUERY == "bronze":
            run_ids["bronze"] = str(q.runId)
            out["layers"]["bronze"] = figures(seconds)
        else:
            silver_s = steps.summary(started_at).get("silver", {}).get("batch", 0.0)
            silver_s = min(max(silver_s, 0.001), seconds - 0.001)
            run_ids["silver"] = run_ids["gold"] = str(q.runId)
            out["layers"]["silver"], out["layers"]["gold"] = figures(silver_s), figures(seconds - silver_s)
        log.info("catch-up: %s done in %.1fs (%s events/s)", query.QUERY, seconds, f"{records / seconds:,.0f}")
    started = time.monotonic()
    written = sync.sync_all(settings)
    seconds = time.monotonic() - started
    out["sync"] = {"seconds": round(seconds, 3), "events_per_s": round(records / seconds, 1),
                   "fraction_of_ceiling": round(records / seconds / ceiling_rate, 4),
                   "rows_written": {k: v for k, v in written.items()}}
    log.info("catch-up: PostgreSQL sync in %.1fs", seconds)
    time.sleep(1.0)  # the listener's last progress events
    for name, run_id in run_ids.items():
        out["layers"][name].update(_batch_summary(listener.batches({run_id})))
    layers = sum(v["seconds"] for v in out["layers"].values())
    out["whole"] = {"seconds": round(layers, 3), "events_per_s": round(records / layers, 1),
                    "fraction_of_ceiling": round(records / layers / ceiling_rate, 4)}
    with_sync = layers + out["sync"]["seconds"]
    out["whole_with_sync"] = {"seconds": round(with_sync, 3), "events_per_s": round(records / with_sync, 1),
                              "fraction_of_ceiling": round(records / with_sync / ceiling_rate, 4)}
    from lakehouse import storage

    out["steps_seconds"] = steps.summary(since)
    out["bronze_rows"] = storage.read(spark, settings, "bronze.events").count()
    out["accounted"] = out["bronze_rows"] == records
    return out


def spark_jvm_pid() -> int | None:
    """The Spark driver's JVM among this process's children."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
            # not spark-submit's short-lived launcher JVM (org.apache.spark.launcher.Main)
            if child.name() == "java" and "deploy.SparkSubmit" in cmd and "launcher.Main" not in cmd:
                return child.pid
        except psutil.Error:
            continue
    return None


def driver_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process and the Spark driver's JVM."""
    import psutil

    total = 0.0
    for pid in {os.getpid(), spark_jvm_pid()} - {None}:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


@contextlib.contextmanager
def _released(spark):
    """Free the rows pinned inside (silver's split pins its numbered rows with a local
    checkpoint, which has no unpersist), waiting until they are gone, then collect the JVM's
    garbage, so that each run starts from the same heap: else each repeat over the whole lake
    leaves its copy in memory until the JVM happens to collect it (a second copy of 200,000
    rows ran a 2 GB driver out of memory here), and whichever run came next paid for it (the
    first of each alternated pair was 3-5 s slower of ~20 s, measured)."""
    jsc = spark.sparkContext._jsc
    before = set(jsc.getPersistentRDDs().keys())
    try:
        yield
    finally:
        for rdd_id, rdd in jsc.getPersistentRDDs().items():
            if rdd_id not in before:
                rdd.unpersist(True)
        spark._jvm.System.gc()


def _fewest_files(files: list[tuple[str, int]], rows: int) -> list[tuple[str, int]]:
    """The smallest of ``files`` ((URI, records)) that together hold more than ``rows`` rows (all if they do not)."""
    chosen: list[tuple[str, int]] = []
    for file in sorted(files, key=lambda f: f[1]):
        chosen.append(file)
        if sum(n for _, n in chosen) > rows:
            break
    return chosen


def checks_overhead(spark, settings: Settings, records: int, pairs: int = 7) -> dict:
    """Silver over the pre-loaded bronze rows (batch, into Spark's no-op sink) with and without
    the data-quality checks, in ``pairs`` alternated pairs (the rules' cost: the median of
    the pairs' own ratios), each run from the same heap (``_released``). Without: parse and
    de-duplicate, every parsed record kept, the new rows pinned (silver hands them to gold's
    merge in the same micro-batch, so a silver without checks would keep them too). With: the
    row-level rules judged and split (what silver runs), slowed by the data-quality monitor.

    The monitor's CPU is measured in two parts, from its passes over the new rows of a few
    files (``QualityRunner.validate_files``) taken as every file of both tables, and as the
    smallest files of each that hold more rows than its sample, plus gold: the line through the
    two gives what a pass costs whatever it validates (fixed: its sample's validations, gold)
    and what each new row adds (per event: the read of its coordinates for the offset gaps, the
    files drawn for the sample). Both points sample, as the monitor does at flat out; a pass
    over fewer new rows than the sample costs less. A silver running flat out writes rate
    x period rows between two passes, so the per-row part slows it at any interval; only the
    fixed part is spread over the interval."""
    from lakehouse import quality, storage
    from lakehouse.rules import Rule
    from lakehouse.silver import stream as silver_stream
    from lakehouse.silver import transforms as T

    # Silver's micro-batch pins the bronze columns it reads (silver.stream.process_batch); the
    # monitor reads both tables from Delta. Pinning more here (every bronze column, and silver)
    # overfilled the 2 GB driver's storage memory: the split's pinned rows pushed part of
    # bronze and all of silver to disk (measured), which the next steps then read back.
    bronze = storage.read(spark, settings, "bronze.events").select(*T.SOURCE_COLUMNS).persist()
    bronze.count()
    nothing = (Rule("none", 1, "true", "no rule"),)  # the split's machinery, no check
    runner = quality.QualityRunner(spark, settings, postgres=False)
    sample = quality.sample_rows()
    interval = quality.interval_seconds()

    def noop(df) -> None:
        df.write.format("noop").mode("overwrite").save()

    def without() -> None:
        with _released(spark):
            parsed = T.judge(T.parse(bronze, seed_timezone=settings.seed_timezone, late_after=settings.late_after),
                             nothing)
            first, _ = T.first_per_event(T.number_copies(parsed))
            noop(T.valid_events(first).localCheckpoint())

    def rules() -> None:
        with _released(spark):
            rows = silver_stream.split(bronze, settings, None)
            noop(rows.events)
            noop(rows.quarantine)

    # The monitor's pass over new rows (QualityRunner.validate_files) on every file of both
    # tables, and on the smallest files of each that hold more rows than its sample: two points
    # of its CPU against the rows it validates, both where it samples, as it does at flat out.
    files = {t: storage.new_files(spark, settings, t, None, storage.version(spark, settings, t))
             for t in quality.MONITORED}
    smallest = {t: _fewest_files(f, sample) for t, f in files.items()}
    small_events = sum(n for f in smallest.values() for _, n in f) / len(smallest)

    def monitor_pass(chosen: dict) -> None:  # the bronze and silver suites on new rows, then gold as it is
        with _released(spark):
            for table, new in chosen.items():
                runner.validate_files(table, new, info={"table_name": table, "batch_id": None,
                                                        "delta_version": None}, key="bench")
            snapshot = quality.gold_snapshot(spark, settings)
            if snapshot:
                runner.validate_gold(snapshot)

    steps = {"without": without, "rules": rules, "small_pass": lambda: monitor_pass(smallest),
             "full_pass": lambda: monitor_pass(files)}
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    cpus: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(pairs):  # without and with the rules in turn first: neither always runs after the other
        order = ("without", "rules") if i % 2 == 0 else ("rules", "without")
        for name in (*order, *(("small_pass", "full_pass") if i < MONITOR_REPEATS else ())):
            t, c = time.monotonic(), driver_cpu_seconds()
            steps[name]()
            seconds[name].append(time.monotonic() - t)
            cpus[name].append(driver_cpu_seconds() - c)
    cpu = {name: min(values) for name, values in cpus.items() if values}
    bronze.unpersist()
    # The monitor makes a pass (resting MONITOR_PACE times as long as each step took), then
    # waits. Per second it takes fixed / period + per_event x rate CPU seconds from the
    # machine's cores, and silver (which keeps every core busy) loses the same share of its
    # rate, which in turn sets how many rows the monitor validates:
    #   share = (fixed / period + per_event x rate) / (cores + per_event x rate).
    cores = os.cpu_count() or 1
    per_event = max(0.0, cpu["full_pass"] - cpu["small_pass"]) / max(1.0, records - small_events)
    fixed = max(0.0, cpu["small_pass"] - per_event * small_events)
    wait = None if interval is None else max(interval, settings.trigger_seconds, 1.0)
    period = None if wait is None else min(seconds["small_pass"]) * (1 + quality.MONITOR_PACE) + wait
    without_s, rules_s = statistics.median(seconds["without"]), statistics.median(seconds["rules"])
    rules_rate = records / rules_s
    load = per_event * rules_rate
    share = 0.0 if period is None else min(1.0, (fixed / period + load) / (cores + load))
    # The rules' cost is the median over the pairs of each pair's own ratio: the machine's
    # speed drifts between pairs more than within one.
    per_pair = [1 - w / r for w, r in zip(seconds["without"], seconds["rules"], strict=True)]
    rules_cost = statistics.median(per_pair)
    cost = 1 - (1 - rules_cost) * (1 - share)
    return {"events": records, "pairs": pairs, "without_seconds": round(without_s, 3),
            "rules_seconds": round(rules_s, 3),
            "runs_seconds": {name: [round(x, 2) for x in seconds[name]] for name in ("without", "rules")},
            "runs_cpu_seconds": {name: [round(x, 2) for x in cpus[name]] for name in ("without", "rules")},
            "expectations_seconds": round(min(seconds["full_pass"]), 3),
            "expectations_cpu_seconds": round(cpu["full_pass"], 3),
            "expectations_fixed_cpu_seconds": round(fixed, 3),
            "expectations_cpu_seconds_per_million_events": round(per_event * 1e6, 3),
            "small_pass_events": round(small_events), "sample_rows": sample,
            "monitor_wait_seconds": wait, "monitor_share": round(share, 4),
            "without_events_per_s": round(records / without_s, 1),
            "with_events_per_s": round(records / without_s * (1 - cost), 1),
            "with_rules_only_events_per_s": round(rules_rate, 1),
            "cost": round(cost, 4), "rules_cost": round(rules_cost, 4),
            "rules_cost_per_pair": [round(x, 4) for x in per_pair]}


# --- 4. the original design, re-created for comparison ------------------------------------

BASELINE_SCHEMA = "city STRING, status_color STRING, estimated_resolution_time INT, event_time STRING"


def _baseline_table(settings: Settings, label: str) -> str:
    import psycopg2

    from lakehouse.stack import writer_url

    table = f"bench_baseline_{label}"
    with psycopg2.connect(writer_url(settings)) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"CREATE TABLE {table} (city text, status_color text, event_count bigint, "
                    "total_estimated_resolution_time bigint, batch_id bigint, written_at timestamptz DEFAULT clock_timestamp())")
    conn.close()
    return table


def baseline_start(spark, settings: Settings, label: str, trigger: dict, starting: str) -> tuple:
    """The original project's job: Kafka -> from_json -> (a) the events as JSON files, (b) count and
    sum of the estimated resolution time by city and status, output mode update, each micro-batch's
    rows appended to a PostgreSQL table from foreachBatch. Returns (raw query, aggregate query, table)."""
    from psycopg2.extras import execute_values
    from pyspark.sql import functions as F

    from lakehouse.stack import writer_url

    table = _baseline_table(settings, label)
    url = writer_url(settings)
    events = (kafka_stream(spark, settings, settings.kafka_topic, starting, limit=False)
              .select(F.from_json(F.col("value").cast("string"), BASELINE_SCHEMA).alias("e")).select("e.*"))
    raw = (events.writeStream.format("json").queryName(f"baseline-{label}-raw")
           .option("path", str(settings.home / "bench" / f"baseline-{label}-raw"))
           .option("checkpointLocation", _checkpoint(settings, f"baseline-{label}-raw"))
           .trigger(**trigger).start())
    totals = events.groupBy("city", "status_color").agg(
        F.count(F.lit(1)).alias("event_count"),
        F.sum("estimated_resolution_time").alias("total_estimated_resolution_time"))

    def append(df, batch_id: int) -> None:
        import psycopg2

        rows = [(*tuple(r), batch_id) for r in df.collect()]
        if rows:
            with psycopg2.connect(url) as conn, conn.cursor() as cur:
                execute_values(cur, f"INSERT INTO {table} (city, status_color, event_count, "
                                    "total_estimated_resolution_time, batch_id) VALUES %s", rows)
            conn.close()

    agg = (totals.writeStream.outputMode("update").foreachBatch(append).queryName(f"baseline-{label}-agg")
           .option("checkpointLocation", _checkpoint(settings, f"baseline-{label}-agg"))
           .trigger(**trigger).start())
    return raw, agg, table


def baseline_counts(settings: Settings, table: str) -> tuple[int, int]:
    """(true total: the latest row per group, summed; naive total: every appended row summed)."""
    import psycopg2

    from lakehouse.stack import writer_url

    with psycopg2.connect(writer_url(settings)) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT COALESCE(sum(c), 0) FROM (SELECT max(event_count) c FROM {table} "
                    "GROUP BY city, status_color) s")
        true_total = int(cur.fetchone()[0])
        cur.execute(f"SELECT COALESCE(sum(event_count), 0) FROM {table}")
        naive = int(cur.fetchone()[0])
    conn.close()
    return true_total, naive


def baseline_catch_up(spark, settings: Settings, records: int, ceiling_rate: float) -> dict:
    started = time.monotonic()
    raw, agg, table = baseline_start(spark, settings, "catchup", {"availableNow": True}, "earliest")
    raw.awaitTermination()
    agg.awaitTermination()
    seconds = time.monotonic() - started
    true_total, _ = baseline_counts(settings, table)
    return {"events": records, "seconds": round(seconds, 3), "events_per_s": round(records / seconds, 1),
            "fraction_of_ceiling": round(records / seconds / ceiling_rate, 4), "aggregated_events": true_total}


# --- 5. freshness ------------------------------------------------------------------

class Poller(threading.Thread):
    """Calls ``probe`` (how many events are visible) every ``interval`` seconds; keeps (start time, count)."""

    def __init__(self, name: str, probe, interval: float):
        super().__init__(name=f"bench-poll-{name}", daemon=True)
        self.probe, self.interval = probe, interval
        self.samples: list[tuple[float, int]] = []
        self.errors = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.time()
            try:
                self.samples.append((started, int(self.probe())))
            except Exception:  # noqa: BLE001 - counted; the pipeline may be between commits
                self.errors += 1
            self.stopping.wait(max(0.0, self.interval - (time.time() - started)))

    @property
    def last(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


def pg_probe(settings: Settings, sql: str):
    import psycopg2

    from lakehouse.stack import writer_url

    conn = psycopg2.connect(writer_url(settings))
    conn.autocommit = True

    def probe() -> int:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0] or 0

    probe.close = conn.close
    return probe


def api_probe(port: int):
    import urllib.request

    def probe() -> int:
        # The pivot's source (all time), as PostgreSQL's probe counts it: the Overview's time
        # range would also move with the clock and with the event times of earlier sections.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status-by-location", timeout=5) as r:
            data = json.load(r)
        return sum(row["event_count"] for row in data["rows"])

    return probe


def start_producer(settings: Settings, rate: int, seconds: float, seed: int, out: Path, watch) -> subprocess.Popen:
    spec = {"bootstrap": settings.kafka_bootstrap_servers, "topic": settings.kafka_topic, "rate": rate,
            "seconds": seconds, "seed": seed, "out": str(out)}
    errors = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "lakehouse.bench", "produce", json.dumps(spec)],
                            stdout=errors, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    watch.add("python: simulator (steady rate)", proc.pid)
    return proc


def _latencies(created, samples: list[tuple[float, int]], base: int):
    """Per event (``created``: each one's creation time): the first poll that saw it (the n-th
    event is seen once the count reaches n) minus its creation time, and whether no poll saw it
    (the last poll's time stands in: a lower bound). None without polls."""
    import numpy as np

    if not samples:
        return None
    ts = np.array([t for t, _ in samples])
    cs = np.maximum.accumulate(np.array([c - base for _, c in samples]))
    idx = np.searchsorted(cs, np.arange(1, len(created) + 1), side="left")
    seen = idx < len(cs)
    visible = np.where(seen, ts[np.minimum(idx, len(ts) - 1)], ts[-1])
    return visible - created, ~seen


def _created(timeline: dict):
    """Each event's creation time, from the producer's (time, events made so far) timeline."""
    import numpy as np

    times, counts = np.array(timeline["times"]), np.array(timeline["counts"])
    return times[np.searchsorted(counts, np.arange(1, timeline["events"] + 1), side="left")]


def _window_figures(latencies, events) -> dict:
    """``_latency_figures`` of the events ``events`` (a mask) selects from ``_latencies``."""
    import numpy as np

    if latencies is None:
        return _latency_figures(np.array([]), int(events.sum()))
    lat, never = latencies
    return _latency_figures(lat[events], int(never[events].sum()))


def _latency_figures(lat, unseen: int) -> dict:
    """Percentiles over every event; with events never seen they are lower bounds."""
    return {**_pct(lat), "mean": round(float(lat.mean()), 4) if len(lat) else None,
            "max": round(float(lat.max()), 4) if len(lat) else None, "events_seen": int(len(lat)) - unseen if len(lat) else 0,
            "events_never_seen": unseen, "lower_bounds": bool(unseen)}


def run_freshness(settings: Settings, rate: int, seconds: float, drain: float, seed: int,
                  probes: dict, watch, label: str, warmup: float = 0.0) -> dict:
    """Send at ``rate`` for ``warmup`` + ``seconds`` while polling every probe; per-event latency
    per probe, of the events made after the warm-up (steady state: the first micro-batches at a
    new rate compile their code and fill caches), and of all of them."""
    pollers = {name: Poller(name, probe, interval) for name, (probe, interval) in probes.items()}
    bases = {}
    for name, (probe, _) in probes.items():
        bases[name] = int(probe())
    for p in pollers.values():
        p.start()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "timeline.json"
        proc = start_producer(settings, rate, warmup + seconds, seed, out, watch)
        started = time.monotonic()
        with _progress(warmup + seconds, f"{label}: sending {rate:,}/s") as bar:
            while proc.poll() is None:
                time.sleep(0.5)
                bar.n = min(warmup + seconds, time.monotonic() - started)
                bar.set_postfix_str(" ".join(f"{k}={p.last - bases[k]:,}" for k, p in pollers.items()))
        if proc.returncode != 0:
            for p in pollers.values():
                p.stop()
            raise BenchError(f"the steady-rate simulator exited with {proc.returncode}: "
                             f"{out.with_suffix('.log').read_text(errors='replace')[-1500:]}")
        timeline = json.loads(out.read_text())
    total = timeline["events"]
    log.info("%s: sent %s events in %.1fs; waiting up to %.0fs for all of them to be visible", label,
             f"{total:,}", timeline["times"][-1] - timeline["times"][0] if timeline["times"] else 0, drain)
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline and any(p.last - bases[k] < total for k, p in pollers.items()):
        time.sleep(0.5)
    for p in pollers.values():
        p.stop()
    import numpy as np

    created = _created(timeline)
    since = float(created[0]) + warmup if len(created) else None
    steady = created >= since if since is not None else np.ones(0, dtype=bool)  # made after the warm-up
    measured = created[steady]
    span = float(measured[-1] - measured[0]) if len(measured) > 1 else seconds
    result = {"rate_target": rate, "rate_achieved": round(len(measured) / max(span, 1e-9), 1),
              "events": len(measured), "events_sent": total, "warmup_seconds": warmup,
              "delivered": timeline["delivered"], "created_from": since,
              "poll_interval_s": {k: v[1] for k, v in probes.items()}}
    for name, p in pollers.items():
        latencies = _latencies(created, p.samples, bases[name])
        result[name] = {**_window_figures(latencies, steady), "poll_errors": p.errors}
        if warmup:
            result[f"{name}_with_warmup"] = _window_figures(latencies, np.ones(len(created), dtype=bool))
    result["_timeline"] = timeline
    return result


def timed_syncer(settings: Settings, batches: queue.Queue, wake: threading.Event):
    """The pipeline's own sync thread (pipeline.Syncer), keeping the start and end of each sync."""
    from lakehouse.pipeline import Syncer

    class Timed(Syncer):
        def __init__(self, *args):
            super().__init__(*args)
            self.runs: list[tuple[float, float]] = []

        def sync_once(self) -> None:
            started = time.time()
            super().sync_once()
            self.runs.append((started, time.time()))

    return Timed(settings, batches, wake)


def _wait_started(queries, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(not q.isActive or str(q.status.get("message", "")).startswith("Waiting") for q in queries):
            return
        time.sleep(0.2)


def _stop_queries(queries, wait: float = 10) -> None:
    """Stop between batches when a batch ends within ``wait`` seconds, else interrupt it (exactly once either way)."""
    for q in queries:
        deadline = time.monotonic() + wait
        while q.isActive and q.status.get("isTriggerActive") and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(Exception):
            q.stop()


def _first(items: list[tuple[float, float]], starts: list[float], t: float):
    import bisect

    i = bisect.bisect_left(starts, t)
    return items[i] if i < len(items) else None


def hop_model(created: list[float], hops: dict[str, list[tuple[float, float]]]) -> dict:
    """Where an event's time goes: for sampled creation times, the first batch of the first hop
    (bronze) that starts after it, the first batch of the next hop (refine: silver and gold) that
    starts after that one ended, then the sync; the mean wait before and run time of each hop."""
    import numpy as np

    order = list(hops)
    spans = {h: sorted(hops.get(h, [])) for h in order}
    starts = {h: [s for s, _ in spans[h]] for h in order}
    parts: dict[str, list[float]] = {f"{h}_{k}": [] for h in order for k in ("wait", "run")}
    totals = []
    for t in created:
        at, row = t, {}
        for h in order:
            span = _first(spans[h], starts[h], at)
            if span is None:
                break
            row[f"{h}_wait"], row[f"{h}_run"] = span[0] - at, span[1] - span[0]
            at = span[1]
        else:
            for k, v in row.items():
                parts[k].append(v)
            totals.append(at - t)
    if not totals:
        return {"events_modelled": 0}
    return {"events_modelled": len(totals), "mean_s": {k: round(float(np.mean(v)), 3) for k, v in parts.items()},
            "model_total": {**_pct(np.array(totals), (50, 95)), "mean": round(float(np.mean(totals)), 3)}}


def freshness_ours(spark, settings: Settings, listener, steps: Steps, rate: int, seconds: float, drain: float,
                   seed: int, dashboard_port: int, watch, warmup: float = 0.0) -> dict:
    """The pipeline as `lakehouse stream` runs it (its two chained queries on the default trigger,
    the sync thread, the batch log, the data-quality monitor), in this process, while the
    simulator sends at ``rate``."""
    from lakehouse import pipeline

    batches: queue.Queue = queue.Queue()
    gold_done = threading.Event()
    batch_log = pipeline.BatchLog(batches, gold_done)
    spark.streams.addListener(batch_log)
    syncer = timed_syncer(settings, batches, gold_done)
    trigger = {"processingTime": f"{settings.trigger_seconds} seconds"}
    queries = []
    pg = pg_probe(settings, "SELECT sum(event_count) FROM status_by_location")
    monitor = None
    try:
        syncer.start()
        quality = getattr(pipeline, "quality", None)  # the data-quality monitor `lakehouse stream` runs too
        if quality is not None and hasattr(quality, "start_monitor"):
            # Steady state: the monitor has validated the rows already there, as it would have while
            # `lakehouse stream` caught up; else its first pass covers the whole lake during the run.
            log.info("freshness: data-quality checks brought up to date first ...")
            quality.QualityRunner(spark, settings).run_once()
            monitor = quality.start_monitor(spark, settings)
        queries = [query.start(spark, settings, trigger, batch_log.on_batch) for query in pipeline.QUERIES]
        _wait_started(queries)
        time.sleep(2 * settings.trigger_seconds)  # a first idle round of triggers and syncs
        result = run_freshness(settings, rate, seconds, drain, seed,
                               {"postgres": (pg, PG_POLL_S), "api": (api_probe(dashboard_port), API_POLL_S)},
                               watch, f"freshness {rate:,}/s", warmup)
    finally:
        if monitor is not None:
            monitor.stop()
        _stop_queries(queries)
        syncer.stop()
        spark.streams.removeListener(batch_log)
        pg.close()
    time.sleep(1.0)
    timeline = result.pop("_timeline")
    first = result["created_from"] or time.time()  # the measured window: after the warm-up
    hops: dict[str, list[tuple[float, float]]] = {}
    layers = {}
    for q in queries:
        mine = [b for b in listener.batches({str(q.runId)}) if b["start"] >= first - 30]
        hops[q.name] = [(b["start"], b["start"] + b["duration_ms"].get("triggerExecution", 0) / 1000) for b in mine]
        layers[q.name] = _batch_summary(mine)
    hops["sync"] = [r for r in syncer.runs if r[0] >= first - 30]
    layers["sync"] = {"runs": len(hops["sync"]),
                      "mean_run_ms": round(statistics.mean(e - s for s, e in hops["sync"]) * 1000) if hops["sync"] else None}
    made = [t for t in timeline["times"] if t >= first]
    result["hops"] = hop_model(made[::max(1, len(made) // 2000)], hops)
    result["steps_seconds"] = steps.summary(first)
    result["layers"] = layers
    result["trigger_s"] = settings.trigger_seconds
    return result


def freshness_baseline(spark, settings: Settings, rate: int, seconds: float, drain: float, seed: int,
                       triggers: tuple[float, float], watch, warmup: float = 0.0) -> dict:
    """Both triggers of the original design at once, from the topic's current end, at ``rate``."""
    _, ends = topic_offsets(settings, settings.kafka_topic)
    starting = json.dumps({settings.kafka_topic: {str(p): o for p, o in ends.items()}})
    queries, tables, probes = [], {}, {}
    try:
        for key, trig in zip(("long_trigger", "short_trigger"), triggers):
            raw, agg, table = baseline_start(spark, settings, key.split("_")[0], {"processingTime": f"{trig} seconds"},
                                             starting)
            queries += [raw, agg]
            tables[key] = table
            probes[key] = (pg_probe(settings, f"SELECT COALESCE(sum(c), 0) FROM (SELECT max(event_count) c "
                                              f"FROM {table} GROUP BY city, status_color) s"), PG_POLL_S)
        _wait_started(queries)
        result = run_freshness(settings, rate, seconds, drain + max(triggers), seed, probes, watch,
                               "baseline freshness", warmup)
    finally:
        _stop_queries(queries)
        for probe, _ in probes.values():
            probe.close()
    result.pop("_timeline")
    out = {"rate_target": result["rate_target"], "rate_achieved": result["rate_achieved"], "events": result["events"]}
    for (key, table), trig in zip(tables.items(), triggers):
        true_total, naive = baseline_counts(settings, table)
        out[key] = {"trigger_s": trig, **result[key], "visible_events": true_total, "appended_total": naive}
    short = out["short_trigger"]
    out["double_count"] = {"trigger_s": short["trigger_s"], "true_events": result["events_sent"],
                           "sum_of_appended_rows": short["appended_total"],
                           "ratio": round(short["appended_total"] / max(result["events_sent"], 1), 3)}
    return out


# --- 6. dashboard ------------------------------------------------------------------

def start_dashboard(watch) -> tuple[subprocess.Popen, int]:
    """The dashboard (dashboard.cli.make_server, served in a thread) in a process of its own."""
    proc = subprocess.Popen([sys.executable, "-m", "lakehouse.bench", "dashboard"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise BenchError(f"the dashboard did not start (exit code {proc.poll()})")
    watch.add("python: dashboard", proc.pid)
    return proc, int(line)


async def _load(port: int, requests: int, concurrency: int) -> list[tuple[str, int, float, float]]:
    """(path, HTTP status, seconds to the whole response, seconds to connect) per request."""
    counter = iter(range(requests))
    results: list[tuple[str, int, float, float]] = []

    async def client() -> None:
        for i in counter:
            path = API_PATHS[i % len(API_PATHS)]
            started = time.perf_counter()
            status, connected = 0, float("nan")
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                connected = time.perf_counter() - started
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                await writer.drain()
                data = await asyncio.wait_for(reader.read(), timeout=60)
                writer.close()
                status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
            except (TimeoutError, OSError, ValueError, IndexError):
                status = 0
            results.append((path, status, time.perf_counter() - started, connected))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return results


def dashboard_load(settings: Settings, port: int, requests: int, single: int) -> dict:
    import numpy as np
    import psycopg2

    from lakehouse.stack import reader_url

    def figures(rows, seconds):
        ms = np.array([r[2] * 1000 for r in rows])
        ok = sum(1 for r in rows if r[1] == 200)
        connect = np.array([r[3] * 1000 for r in rows if r[3] == r[3]])
        return {"requests": len(rows), "ok": ok, "errors": len(rows) - ok,
                **{k + "_ms": v for k, v in _pct(ms).items()}, "mean_ms": round(float(ms.mean()), 2),
                "throughput_rps": round(len(rows) / seconds, 1),
                "connect_ms": _pct(connect, (50, 95, 99)),
                "connects_over_900ms": int((connect > 900).sum())}

    started = time.perf_counter()
    one = asyncio.run(_load(port, single, 1))
    solo = figures(one, time.perf_counter() - started)
    started = time.perf_counter()
    rows = asyncio.run(_load(port, requests, CONCURRENCY))
    loaded = figures(rows, time.perf_counter() - started)
    by_path = {path: _pct(np.array([r[2] * 1000 for r in rows if r[0] == path]), (50, 95)) for path in API_PATHS}
    connects = []
    url = reader_url(settings)
    for _ in range(10):
        t = time.perf_counter()
        psycopg2.connect(url).close()
        connects.append((time.perf_counter() - t) * 1000)
    return {"concurrency": CONCURRENCY, **loaded, "by_endpoint_ms": by_path, "single_client": solo,
            "pg_connect_ms": round(statistics.median(connects), 2), "paths": list(API_PATHS)}


# --- 7. cost -------------------------------------------------------------------------

def _du(path: Path) -> tuple[int, int]:
    """(bytes, data files) under path; data files are *.parquet / *.json outside _delta_log."""
    size = files = 0
    for root, _, names in os.walk(path):
        for n in names:
            with contextlib.suppress(OSError):
                size += (Path(root) / n).stat().st_blocks * 512  # allocated, not apparent (Kafka's sparse indexes)
            if "_delta_log" not in root and (n.endswith(".parquet") or n.endswith(".json")) and not n.startswith("."):
                files += 1
    return size, files


def disk_per_million(settings: Settings, records: int) -> dict:
    from lakehouse.tables import TABLES

    out = {}
    for name in TABLES:
        size, _ = _du(Path(settings.table_path(name)))
        out[name] = round(size * 1e6 / records)
    kafka = sum(_du(p)[0] for p in (settings.home / "kafka" / "data").glob(f"{settings.kafka_topic}-*"))
    out["kafka topic"] = round(kafka * 1e6 / records)
    out["checkpoints"] = round(_du(Path(settings.checkpoint_path("")))[0] * 1e6 / records)
    baseline = settings.home / "bench" / "baseline-catchup-raw"
    if baseline.exists():
        out["baseline raw JSON files"] = round(_du(baseline)[0] * 1e6 / records)
    return out


def files_per_table(spark, settings: Settings) -> dict:
    from delta.tables import DeltaTable

    from lakehouse import storage
    from lakehouse.tables import TABLES

    out = {}
    for name in TABLES:
        path = settings.table_path(name)
        _, on_disk = _du(Path(path))
        detail = DeltaTable.forPath(spark, path).detail().first()
        out[name] = {"files_in_snapshot": int(detail["numFiles"]), "files_on_disk": on_disk,
                     "bytes_in_snapshot": int(detail["sizeInBytes"]), "versions": storage.version(spark, settings, name) + 1}
    return out


# --- machine and versions ----------------------------------------------------------

def machine() -> dict:
    import psutil

    model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cores": os.cpu_count(), "memory_bytes": psutil.virtual_memory().total, "cpu_model": model,
            "os": platform.platform(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def versions(spark, settings: Settings) -> dict:
    import importlib.metadata as md

    import psycopg2

    from lakehouse.stack import writer_url

    out = {"python": platform.python_version(), "spark": spark.version if spark else None,
           "delta_jar": DELTA_PACKAGE.rsplit(":", 1)[1], "delta_spark_python": md.version("delta-spark"),
           "kafka_broker": KAFKA_VERSION, "kafka_python": md.version("kafka-python"), "django": md.version("django")}
    with contextlib.suppress(Exception):
        with psycopg2.connect(writer_url(settings)) as conn, conn.cursor() as cur:
            cur.execute("SHOW server_version")
            out["postgresql"] = cur.fetchone()[0].split()[0]
        conn.close()
    with contextlib.suppress(Exception):
        java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
        out["java"] = java.split('"')[1] if '"' in java else java
    return out


# --- the run -------------------------------------------------------------------------

def _dq_interval():
    """Seconds between the data-quality monitor's passes (None: off), as `lakehouse stream` reads it."""
    try:
        from lakehouse import quality

        return quality.interval_seconds()
    except Exception:  # noqa: BLE001 - only reported
        return "unknown"


def _boot_spark(box: dict) -> None:
    """The Spark session: the one already running (a test session's, used as it is) or a new one."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    from lakehouse.spark import get_spark

    started = time.monotonic()
    try:
        if SparkContext._active_spark_context is not None:
            box["spark"], box["created"] = SparkSession.builder.getOrCreate(), False
        else:
            box["spark"] = get_spark("lakehouse-bench", get_settings())
            box["created"] = True
    except Exception as e:  # noqa: BLE001 - raised again by the spark section
        box["error"] = e
    box["seconds"] = round(time.monotonic() - started, 2)


class Bench:
    def __init__(self, mode: str, out_dir: Path, docs: Path):
        self.mode, self.profile, self.out_dir, self.docs = mode, PROFILES[mode], out_dir, docs
        self.results: dict = {"mode": mode, "profile": asdict(self.profile), "errors": []}
        self.failed: set[str] = set()

    @contextlib.contextmanager
    def section(self, name: str, needs: tuple[str, ...] = ()):
        """One measurement; if it cannot run, say why, record it and go on with the others."""
        missing = [n for n in needs if n in self.failed or n not in self.results]
        if missing:
            self.failed.add(name)
            self.results["errors"].append({"section": name, "error": f"skipped: {', '.join(missing)} did not run"})
            log.error("%s: skipped, %s did not run", name, ", ".join(missing))
            yield False
            return
        log.info("== %s", name)
        started = time.monotonic()
        try:
            yield True
            log.info("== %s done in %.0fs", name, time.monotonic() - started)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - reported, the other measurements still run
            self.failed.add(name)
            self.results.pop(name, None)
            self.results["errors"].append({"section": name, "error": f"{type(e).__name__}: {e}"})
            log.error("%s could not run: %s\n%s", name, e, traceback.format_exc())

    def run(self) -> dict:
        import psutil

        p = self.profile
        r = self.results
        started = time.monotonic()
        r["started_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        r["machine"] = machine()
        cpu_start = psutil.cpu_times()
        spark = listener = None
        quiet = logging.getLogger("lakehouse.pipeline")
        level = quiet.level
        quiet.setLevel(logging.WARNING)  # the per-batch log lines; the bench collects the same figures
        boot: dict = {}
        booting = threading.Thread(target=_boot_spark, args=(boot,), name="bench-spark-boot", daemon=True)
        booting.start()  # the JVM starts while Kafka and PostgreSQL do
        with private_stack() as settings:
            from lakehouse.stack import Kafka

            r["settings"] = {"trigger_seconds": settings.trigger_seconds, "kafka_partitions": settings.kafka_partitions,
                             "max_offsets_per_trigger": settings.max_offsets_per_trigger,
                             "spark_master": settings.spark_master,
                             "spark_shuffle_partitions": settings.spark_shuffle_partitions,
                             "fault_fraction": FAULT_FRACTION, "fault_kinds": list(FAULT_KINDS),
                             "dq_interval_seconds": _dq_interval()}
            for topic in (TOPIC, PROFILE_TOPIC):
                Kafka(settings).ensure_topic(topic)
            watch = ProcessWatch(settings)
            watch.start()
            dashboard = None
            steps = Steps().__enter__()
            try:
                with self.section("producer") as ok:
                    if ok:
                        log.info("producer: the simulator sends %s events (v1, 1%% faults) as fast as it can",
                                 f"{p.events:,}")
                        report = simulate(settings, TOPIC, p.events, seed=1)
                        records, _ = topic_offsets(settings, TOPIC)
                        rate = report["events"] / report["elapsed_seconds"]
                        log.info("producer: %s events in %.1fs = %s events/s", f"{report['events']:,}",
                                 report["elapsed_seconds"], f"{rate:,.0f}")
                        gen = generation_rate(max(p.profile_events, 5000))
                        log.info("producer: the event generator alone makes %s events/s; profiling %s events ...",
                                 f"{gen:,.0f}", f"{p.profile_events:,}")
                        prof = profile_producer(settings, p.profile_events)
                        sizes = _message_sizes(settings)
                        r["producer"] = {"events": report["events"], "records": records,
                                         "seconds": report["elapsed_seconds"], "events_per_s": round(rate, 1),
                                         "goal_events_per_s": PRODUCER_GOAL,
                                         "fraction_of_goal": round(rate / PRODUCER_GOAL, 4),
                                         "generation_only_events_per_s": round(gen, 1),
                                         "generation_share_of_time": round(rate / gen, 4),
                                         "delivered": report["delivery"]["delivered"],
                                         "failed": report["delivery"]["failed"],
                                         "mean_message_bytes": sizes, "faults": report["faults"], "profile": prof}
                records = r.get("producer", {}).get("records", 0)

                with self.section("spark", needs=("producer",)) as ok:
                    if ok:
                        from lakehouse import pipeline

                        t = time.monotonic()
                        booting.join()
                        if "error" in boot:
                            raise boot["error"]
                        # as `lakehouse stream` prepares it: rules checked, quality rules compiled, tables made
                        spark = pipeline._session(settings)
                        listener = _progress_listener()
                        spark.streams.addListener(listener)
                        r["spark"] = {"start_seconds": boot["seconds"], "tables_seconds": round(time.monotonic() - t, 2)}
                        log.info("spark: session ready in %.1fs (started alongside the stack), tables in %.1fs; "
                                 "warming up on the profile topic", boot["seconds"], time.monotonic() - t)
                        ceiling(spark, settings, PROFILE_TOPIC, "warmup")

                with self.section("ceiling", needs=("spark",)) as ok:
                    if ok:
                        first = ceiling(spark, settings, TOPIC, "ceiling-1")
                        log.info("ceiling: Spark reads %s records in %.1fs = %s events/s", f"{records:,}", first,
                                 f"{records / first:,.0f}")
                        r["ceiling"] = {"events": records, "runs_seconds": [round(first, 3)]}
                        self._ceiling_rate()

                with self.section("pipeline", needs=("ceiling",)) as ok:
                    if ok:
                        r["pipeline"] = catch_up(spark, settings, listener, steps, records, r["ceiling"]["events_per_s"])
                        r["cost_disk_per_million_events"] = disk_per_million(settings, records)

                with self.section("quality_overhead", needs=("pipeline",)) as ok:
                    if ok:
                        log.info("data-quality checks: silver over %s records with and without them", f"{records:,}")
                        r["quality_overhead"] = checks_overhead(spark, settings, records)

                with self.section("baseline_catch_up", needs=("ceiling",)) as ok:
                    if ok:
                        log.info("baseline: the original design catching up on the same %s records", f"{records:,}")
                        r["baseline_catch_up"] = baseline_catch_up(spark, settings, records,
                                                                   r["ceiling"]["events_per_s"])
                        # a second ceiling run after the others: the reference is their mean
                        again = ceiling(spark, settings, TOPIC, "ceiling-2")
                        r["ceiling"]["runs_seconds"].append(round(again, 3))
                        log.info("ceiling again: %.1fs = %s events/s", again, f"{records / again:,.0f}")
                        self._ceiling_rate()
                        self._rescale()

                with self.section("dashboard_server", needs=("pipeline",)) as ok:
                    if ok:
                        dashboard, port = start_dashboard(watch)
                        r["dashboard_server"] = {"port": port}

                r["freshness"] = []
                for i, rate in enumerate(p.rates):
                    with self.section(f"freshness_{rate}", needs=("dashboard_server",)) as ok:
                        if ok:
                            f = freshness_ours(spark, settings, listener, steps, rate, p.fresh_seconds, p.drain_seconds,
                                               seed=11 + i, dashboard_port=r["dashboard_server"]["port"], watch=watch,
                                               warmup=p.warmup_seconds)
                            r["freshness"].append(f)
                            log.info("freshness %s/s: PostgreSQL p50 %.2fs p95 %.2fs, API p50 %.2fs p95 %.2fs",
                                     f"{rate:,}", f["postgres"]["p50"] or -1, f["postgres"]["p95"] or -1,
                                     f["api"]["p50"] or -1, f["api"]["p95"] or -1)

                with self.section("baseline_freshness", needs=("spark",)) as ok:
                    if ok:
                        r["baseline_freshness"] = freshness_baseline(spark, settings, p.rates[0], p.baseline_seconds,
                                                                     p.drain_seconds, 21, p.baseline_triggers, watch,
                                                                     p.warmup_seconds)

                with self.section("dashboard", needs=("dashboard_server",)) as ok:
                    if ok:
                        log.info("dashboard: %s requests at %s concurrent clients", f"{p.requests:,}", CONCURRENCY)
                        r["dashboard"] = dashboard_load(settings, r["dashboard_server"]["port"], p.requests,
                                                        p.single_requests)
                        log.info("dashboard: p50 %.0f ms, p95 %.0f ms, p99 %.0f ms, %.0f requests/s",
                                 r["dashboard"]["p50_ms"], r["dashboard"]["p95_ms"], r["dashboard"]["p99_ms"],
                                 r["dashboard"]["throughput_rps"])

                with self.section("cost_files", needs=("pipeline",)) as ok:
                    if ok:
                        r["cost_files"] = files_per_table(spark, settings)
                with contextlib.suppress(Exception):
                    r["versions"] = versions(spark, settings)
            finally:
                steps.__exit__(None, None, None)
                if dashboard is not None:
                    dashboard.terminate()
                    try:
                        dashboard.wait(10)
                    except subprocess.TimeoutExpired:
                        dashboard.kill()
                watch.stop()
                if spark is not None:
                    for q in spark.streams.active:
                        with contextlib.suppress(Exception):
                            q.stop()
                    if listener is not None:
                        spark.streams.removeListener(listener)
                booting.join()
                if boot.get("created"):
                    boot["spark"].stop()
                quiet.setLevel(level)
            r["cost_memory"] = {"peak_bytes": dict(sorted(watch.peak.items())),
                                "cpu_seconds": {k: round(v, 1) for k, v in sorted(watch.cpu.items())}}
        cpu_end = psutil.cpu_times()
        busy = sum(getattr(cpu_end, f) - getattr(cpu_start, f) for f in ("user", "system", "nice", "irq", "softirq"))
        elapsed = time.monotonic() - started
        ours = sum(watch.cpu.values())
        r["machine"]["cpu_busy_share"] = round(busy / (elapsed * (os.cpu_count() or 1)), 3)
        r["machine"]["cpu_seconds_other_processes"] = round(max(0.0, busy - ours), 1)
        r["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        r["elapsed_seconds"] = round(elapsed, 1)
        r["goals"] = goals(r)
        return r

    def _ceiling_rate(self) -> None:
        c = self.results["ceiling"]
        c["seconds"] = round(statistics.mean(c["runs_seconds"]), 3)
        c["events_per_s"] = round(c["events"] / c["seconds"], 1)

    def _rescale(self) -> None:
        """Fractions of the ceiling against the mean of both ceiling runs."""
        rate = self.results["ceiling"]["events_per_s"]
        pipe = self.results.get("pipeline")
        if pipe:
            for fig in [*pipe["layers"].values(), pipe["whole"], pipe["whole_with_sync"], pipe["sync"]]:
                fig["fraction_of_ceiling"] = round(fig["events_per_s"] / rate, 4)
        base = self.results.get("baseline_catch_up")
        if base:
            base["fraction_of_ceiling"] = round(base["events_per_s"] / rate, 4)


def _message_sizes(settings: Settings) -> dict:
    """Mean bytes of the messages the simulator sends (clean v1 and all, as produced)."""
    from simulator.cli import _records

    args = _sim_args(["--events", "5000", "--rate", "0", "--seed", "4", "--faults", str(FAULT_FRACTION),
                      "--fault-kinds", ",".join(FAULT_KINDS)])
    sizes = [(len(rec.value), rec.fault) for rec in _records(args, 5000)]
    clean = [s for s, f in sizes if f is None]
    return {"clean_v1": round(statistics.mean(clean), 1), "all": round(statistics.mean(s for s, _ in sizes), 1)}


# --- goals and where the time goes -----------------------------------------------------

def goals(r: dict) -> list[dict]:
    out = []
    pipe = r.get("pipeline")
    if pipe:
        frac = pipe["whole"]["fraction_of_ceiling"]
        out.append({"goal": "whole pipeline (bronze+silver+gold) >= 1/3 of the ceiling",
                    "measured": f"{frac:.2f} of the ceiling", "value": frac, "met": frac >= GOAL_CEILING_FRACTION,
                    "where": pipeline_where(r)})
    fresh = next((f for f in r.get("freshness", []) if f["rate_target"] == GOAL_FRESHNESS_RATE),
                 (r.get("freshness") or [None])[0])
    if fresh:
        p95 = fresh["api"]["p95"]
        for goal, (limit, below) in {"": (GOAL_FRESHNESS_P95_S, False),
                                     ", the dashboard's goal": (GOAL_DASHBOARD_FRESHNESS_P95_S, True)}.items():
            out.append({"goal": f"freshness p95 {'<' if below else '<='} {limit:.0f} s at {fresh['rate_target']:,} "
                                f"events/s (dashboard API{goal})",
                        "measured": f"{'>= ' if fresh['api']['lower_bounds'] else ''}{_fmt_s(p95)} (PostgreSQL "
                                    f"{'>= ' if fresh['postgres']['lower_bounds'] else ''}"
                                    f"{_fmt_s(fresh['postgres']['p95'])})",
                        "value": p95,
                        "met": p95 is not None and (p95 < limit if below else p95 <= limit)
                        and not fresh["api"]["events_never_seen"],
                        "where": f"the run of the {GOAL_FRESHNESS_P95_S:.0f} s goal above" if below
                        else freshness_where(fresh)})
    dash = r.get("dashboard")
    if dash:
        out.append({"goal": f"dashboard API p95 < {GOAL_API_P95_MS:.0f} ms at {CONCURRENCY} concurrent clients",
                    "measured": _fmt_ms(dash["p95_ms"]), "value": dash["p95_ms"],
                    "met": dash["p95_ms"] < GOAL_API_P95_MS and dash["errors"] == 0, "where": dashboard_where(dash)})
    q = r.get("quality_overhead")
    if q:
        out.append({"goal": f"data-quality checks cost <= {GOAL_CHECKS_COST:.0%} of silver's throughput",
                    "measured": f"{q['cost']:.0%} (row rules alone {q['rules_cost']:.0%}, median of "
                                f"{len(q['rules_cost_per_pair'])} pairs from {min(q['rules_cost_per_pair']):.0%} "
                                f"to {max(q['rules_cost_per_pair']):.0%})", "value": q["cost"],
                    "met": q["cost"] <= GOAL_CHECKS_COST,
                    "where": f"silver without checks {q['without_seconds']:.1f} s, with the row rules "
                             f"{q['rules_seconds']:.1f} s; the Great Expectations monitor (samples of "
                             f"{q['sample_rows']:,} rows) takes {q['expectations_fixed_cpu_seconds']:.1f} CPU s "
                             f"per pass plus {q['expectations_cpu_seconds_per_million_events']:.1f} CPU s per "
                             f"million new events, and waits {q['monitor_wait_seconds']} s between passes in "
                             f"`lakehouse stream`: {q['monitor_share']:.0%} of the machine"})
    prod = r.get("producer")
    if prod:
        out.append({"goal": f"producer >= {PRODUCER_GOAL:,} events/s (the original aim)",
                    "measured": f"{prod['events_per_s']:,.0f} events/s", "value": prod["events_per_s"],
                    "met": prod["events_per_s"] >= PRODUCER_GOAL, "where": producer_where(prod)})
    return out


def producer_where(prod: dict) -> str:
    cats = ", ".join(f"{k} {v:.0%}" for k, v in list(prod["profile"]["by_category"].items())[:4])
    return (f"one Python process: the event generator alone makes {prod['generation_only_events_per_s']:,.0f} "
            f"events/s, so {prod['generation_share_of_time']:.0%} of the producer's time is making events and the rest "
            f"is the kafka-python client; CPU by part (cProfile, all threads): {cats}")


def _steps_text(steps: dict) -> str:
    parts = []
    for layer in ("silver", "gold"):
        st = steps.get(layer)
        if st and st.get("batch"):
            inner = ", ".join(f"{k} {v:.1f} s" for k, v in st.items() if k != "batch")
            parts.append(f"{layer}'s batches {st['batch']:.1f} s = {inner}")
    return "; ".join(parts)


def pipeline_where(r: dict) -> str:
    pipe = r["pipeline"]
    total = pipe["whole"]["seconds"]
    parts = []
    for name, fig in pipe["layers"].items():
        top = next(iter(fig.get("parts_ms", {}).items()), None)
        extra = f", mostly {top[0]}" if top else ""
        parts.append(f"{name} {fig['seconds']:.1f} s ({fig['seconds'] / total:.0%}; {fig.get('batches', 0)} batches"
                     f"{extra})")
    text = "layer times: " + "; ".join(parts) + f"; then the PostgreSQL sync {pipe['sync']['seconds']:.1f} s"
    if _steps_text(pipe.get("steps_seconds", {})):
        text += ". Inside the batches: " + _steps_text(pipe["steps_seconds"])
    return text


def freshness_where(f: dict) -> str:
    layers = f.get("layers", {})
    batches = ", ".join(f"{k} {_fmt_s(v['mean_batch_ms'] / 1000)}" for k, v in layers.items()
                        if k != "sync" and v.get("mean_batch_ms") is not None)
    sync = layers.get("sync", {}).get("mean_run_ms")
    text = f"mean batch time (trigger {f.get('trigger_s', 0):g} s): {batches or 'no batches'}"
    if sync is not None:
        text += f", PostgreSQL sync {_fmt_ms(sync)}"
    unseen = f["postgres"]["events_never_seen"]
    if unseen:
        rates = ", ".join(f"{k} {v['rows_per_batch_second']:,.0f}" for k, v in layers.items()
                          if k != "sync" and v.get("rows_per_batch_second"))
        text += (f"; the pipeline fell behind: {unseen:,} of {f['events']:,} events were still not in PostgreSQL "
                 f"when the wait ended (so the percentiles are lower bounds); while busy, the layers processed "
                 f"{rates or 'n/a'} events per second of batch time, against {f['rate_achieved']:,.0f} sent per second")
    if _steps_text(f.get("steps_seconds", {})):
        text += "; inside the batches, summed over the run: " + _steps_text(f["steps_seconds"])
    hops = f.get("hops", {})
    if hops.get("events_modelled"):
        m = hops["mean_s"]
        hop_names = [k.removesuffix("_wait") for k in m if k.endswith("_wait")]
        parts = [f"{h} wait {m[h + '_wait']:.1f} s + run {m[h + '_run']:.1f} s" for h in hop_names]
        text += ("; per hop, on average: " + "; ".join(parts)
                 + f" (modelled p50 {hops['model_total']['p50']:.1f} s against {f['postgres']['p50'] or 0:.1f} s measured)")
    return text


def dashboard_where(d: dict) -> str:
    solo = d["single_client"]
    text = (f"one client alone: p50 {solo['p50_ms']:.0f} ms per request ({solo['throughput_rps']:.0f} requests/s; "
            f"a new PostgreSQL connection would cost ~{d['pg_connect_ms']:.0f} ms, kept per server thread "
            f"instead); at {d['concurrency']} clients the server (waitress, 1 s answer cache) does "
            f"{d['throughput_rps']:.0f} requests/s, so a request waits its turn "
            f"(~{d['concurrency'] / max(d['throughput_rps'], 1e-9) * 1000:.0f} ms = {d['concurrency']} / "
            f"{d['throughput_rps']:.0f} per s)")
    slow = d.get("connects_over_900ms", 0)
    if slow:
        text += (f"; and {slow} of {d['requests']} TCP connects took over 0.9 s (connect p95 "
                 f"{d['connect_ms']['p95']:.0f} ms): the listen backlog overflowed and the client's SYN was "
                 "retried after 1 s")
    return text


# --- the report ------------------------------------------------------------------------

def _latency_text(x: dict) -> str:
    at_least = ">= " if x.get("lower_bounds") else ""
    return ", ".join(f"p{q} {at_least}{_fmt_s(x[f'p{q}'])}" for q in (50, 95, 99))


def table_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """(section, measure, value, ratio or note) for the printed table and the Markdown one."""
    rows = []
    prod = r.get("producer")
    if prod:
        rows.append(("producer", f"simulator -> Kafka ({prod['mean_message_bytes']['clean_v1']:.0f}-byte v1 messages)",
                     f"{prod['events_per_s']:,.0f} events/s",
                     f"{prod['fraction_of_goal']:.2f} of the {PRODUCER_GOAL:,}/s goal"))
        rows.append(("producer", "event generator alone (no Kafka)", f"{prod['generation_only_events_per_s']:,.0f} events/s",
                     f"{prod['generation_share_of_time']:.0%} of producer time"))
    c = r.get("ceiling")
    if c:
        runs = ", ".join(f"{c['events'] / s:,.0f}" for s in c["runs_seconds"])
        rows.append(("ceiling", "Spark Kafka source -> noop", f"{c['events_per_s']:,.0f} events/s",
                     f"1.00 (runs: {runs})"))
    pipe = r.get("pipeline")
    if pipe:
        for name, fig in pipe["layers"].items():
            rows.append(("catch-up", f"{name} ({fig['seconds']:.1f} s)", f"{fig['events_per_s']:,.0f} events/s",
                         f"{fig['fraction_of_ceiling']:.2f} of ceiling"))
        rows.append(("catch-up", f"whole: bronze+silver+gold ({pipe['whole']['seconds']:.1f} s)",
                     f"{pipe['whole']['events_per_s']:,.0f} events/s",
                     f"{pipe['whole']['fraction_of_ceiling']:.2f} of ceiling"))
        rows.append(("catch-up", f"sync to PostgreSQL ({pipe['sync']['seconds']:.1f} s)",
                     f"{pipe['sync']['events_per_s']:,.0f} events/s", f"{pipe['sync']['fraction_of_ceiling']:.2f} of ceiling"))
        rows.append(("catch-up", "whole + sync", f"{pipe['whole_with_sync']['events_per_s']:,.0f} events/s",
                     f"{pipe['whole_with_sync']['fraction_of_ceiling']:.2f} of ceiling"))
    q = r.get("quality_overhead")
    if q:
        rows.append(("quality", f"silver without checks ({q['without_seconds']:.1f} s, batch)",
                     f"{q['without_events_per_s']:,.0f} events/s", "1.00"))
        rows.append(("quality", f"silver with the row rules ({q['rules_seconds']:.1f} s)",
                     f"{q['with_rules_only_events_per_s']:,.0f} events/s", f"rules cost {q['rules_cost']:.0%}"))
        rows.append(("quality", f"... and the Great Expectations monitor ({q['expectations_fixed_cpu_seconds']:.1f} CPU s "
                                f"per pass + {q['expectations_cpu_seconds_per_million_events']:.1f} per million "
                                f"events: {q['monitor_share']:.0%} of the machine)",
                     f"{q['with_events_per_s']:,.0f} events/s", f"checks cost {q['cost']:.0%} of silver's throughput"))
    b = r.get("baseline_catch_up")
    if b:
        rows.append(("baseline", f"original design catch-up ({b['seconds']:.1f} s)", f"{b['events_per_s']:,.0f} events/s",
                     f"{b['fraction_of_ceiling']:.2f} of ceiling"
                     + (f"; ours (whole + sync) is {pipe['whole_with_sync']['events_per_s'] / b['events_per_s']:.2f}x "
                        "its rate" if pipe else "")))
    for f in r.get("freshness", []):
        for probe, where in (("postgres", "PostgreSQL"), ("api", "dashboard API")):
            x = f[probe]
            warm = f.get(f"{probe}_with_warmup")
            rows.append(("freshness", f"ours at {f['rate_target']:,}/s ({f['rate_achieved']:,.0f} achieved) -> {where}",
                         _latency_text(x),
                         f"{x['events_seen']:,} of {f['events']:,} events seen"
                         + (" (the rest not within the wait)" if x["events_never_seen"] else "")
                         + (f"; after {f['warmup_seconds']:g} s at the rate first (with those events: p95 "
                            f"{_fmt_s(warm['p95'])})" if warm else "")))
    bf = r.get("baseline_freshness")
    if bf:
        ours = next((f for f in r.get("freshness", []) if f["rate_target"] == bf["rate_target"]), None)
        for key in ("long_trigger", "short_trigger"):
            x = bf[key]
            note = f"{x['events_seen']:,} of {bf['events']:,} events seen"
            if ours and ours["postgres"]["p50"] and x["p50"]:
                note += (f"; our p50 is {'>= ' if ours['postgres']['lower_bounds'] else ''}"
                         f"{ours['postgres']['p50'] / x['p50']:.1f}x its p50")
            rows.append(("baseline", f"original design, {x['trigger_s']:g} s trigger, {bf['rate_target']:,}/s -> PostgreSQL",
                         _latency_text(x), note))
        dc = bf["double_count"]
        rows.append(("baseline", f"sum of its appended rows vs true count ({dc['trigger_s']:g} s trigger)",
                     f"{dc['ratio']:.1f}x", f"{dc['sum_of_appended_rows']:,} counted for {dc['true_events']:,} events"))
    d = r.get("dashboard")
    if d:
        rows.append(("dashboard", f"JSON API, {d['concurrency']} concurrent clients ({d['requests']:,} requests)",
                     f"p50 {_fmt_ms(d['p50_ms'])}, p95 {_fmt_ms(d['p95_ms'])}, p99 {_fmt_ms(d['p99_ms'])}",
                     f"{d['throughput_rps']:,.0f} requests/s, {d['errors']} errors"))
        s = d["single_client"]
        rows.append(("dashboard", "JSON API, one client", f"p50 {_fmt_ms(s['p50_ms'])}, p95 {_fmt_ms(s['p95_ms'])}",
                     f"{s['throughput_rps']:,.0f} requests/s"))
    for label, peak in r.get("cost_memory", {}).get("peak_bytes", {}).items():
        cpu = r["cost_memory"]["cpu_seconds"].get(label)
        rows.append(("memory", f"peak {'PSS' if label.startswith('postgresql') else 'RSS'}: {label}",
                     _fmt_bytes(peak), f"{cpu:,.0f} CPU s" if cpu is not None else ""))
    disk = r.get("cost_disk_per_million_events")
    files = r.get("cost_files", {})
    if disk:
        for name, size in disk.items():
            f = files.get(name)
            note = (f"{f['files_in_snapshot']} files in snapshot, {f['files_on_disk']} on disk, {f['versions']} versions"
                    if f else "")
            rows.append(("disk", f"{name} per million events", _fmt_bytes(size), note))
    return rows


def print_table(r: dict) -> None:
    rows = table_rows(r)
    widths = [max(len(row[i]) for row in rows + [("section", "measure", "value", "ratio / note")]) for i in range(4)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print()
    print(line.format("section", "measure", "value", "ratio / note"))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*row))
    print()
    for g in r.get("goals", []):
        print(f"{'MET   ' if g['met'] else 'MISSED'} {g['goal']}: {g['measured']}")
        if not g["met"]:
            print(f"       where the time goes: {g['where']}")
    for e in r.get("errors", []):
        print(f"ERROR  {e['section']}: {e['error']}")


METHOD = """\
## How each figure is measured

All of it runs in one process (`lakehouse bench`) against a private Kafka broker and PostgreSQL
server (a temporary `LAKEHOUSE_HOME`, free ports, removed at the end), never a running
`make stream`. Throughput figures count the topic's records (events plus the injected duplicate
records) and are compared as ratios measured in the same run: the machine is shared, so the
absolute numbers move from run to run, the ratios much less.

- **Producer**: `lakehouse simulate --rate 0 --events N --faults 0.01` (every fault kind but
  `oversize`, whose ~1 MB records would be most of the bytes), called in-process through
  `simulator.cli.run`, i.e. the simulator's own `KafkaSink` (acks=all, idempotent, gzip).
  Events/s is events over the simulator's own elapsed time, final flush included. The event
  generator alone (no Kafka) is timed separately, and a short run is profiled with cProfile in
  every thread (the producer's I/O thread too); blocking waits (poll, locks, sleeps) are left out
  of the top 5.
- **Ceiling**: Spark's Kafka source, read as bronze reads it (`includeHeaders`,
  `maxOffsetsPerTrigger`), into the `noop` sink with `availableNow`, after a warm-up query. Run
  twice (before the catch-up and after the baseline); the reference is the mean.
- **Catch-up**: the pipeline's own two queries (`pipeline.QUERIES`: `bronze`, then `refine`,
  which writes silver and gold in each micro-batch), one after the other with `availableNow`,
  each timed from start to termination, then `serving.sync.sync_all`. The refining query's
  time is split into silver (the time of its batches' silver part) and gold (the rest). Each
  layer's events/s is the run's records over that layer's time; "whole" is records over the
  layers' summed time. Inside silver's
  and gold's micro-batches (here and in the freshness run) the bench times each batch, silver's
  Delta appends and gold's MERGEs by wrapping those functions in its own process; the rest of a
  batch ("other") is its computation: parsing, judging, de-duplicating, aggregating, checkpoints.
- **Data-quality checks**: silver's transforms over the pre-loaded bronze rows as one batch into
  Spark's no-op sink, in seven alternated pairs (which of the two goes first alternates too;
  between runs the pinned rows are freed and the JVM's garbage collected, so each run starts
  from the same heap), from the bronze columns silver reads, pinned as silver's micro-batch
  pins them. The rules' cost is the median of the seven pairs' own ratios (the machine's speed
  drifts between pairs more than within one; the range of the pairs is shown too); the times
  shown are the medians of each kind: without checks (parse, de-duplicate,
  keep every parsed record; its new rows pinned, as silver keeps them for gold's merge in the
  same micro-batch), with the row-level rules (silver's own split into valid and
  quarantined rows), then slowed by the data-quality monitor, which `lakehouse stream` runs in
  a thread of its own. Its CPU seconds (of this process and Spark's JVM) are measured from two
  of its passes over new data files (the least of three each), as the monitor picks and reads
  them: every file of bronze and silver, and the smallest files of each that hold more rows
  than the sample of `LAKEHOUSE_DQ_SAMPLE_ROWS`, both with the gold suites. The line through the
  two gives a fixed part (what every pass costs: its sample's validations, gold) and a part per
  event (reading every new row's Kafka coordinates for the offset gaps, the files drawn for the
  sample). Both points sample, as the monitor does at flat out (a pass over fewer new rows
  costs less). The monitor makes a pass,
  resting twice as long as each of its steps took, then waits `LAKEHOUSE_DQ_INTERVAL_SECONDS`.
  A silver running flat out writes rate x period new rows between two passes, so the per-event
  part takes its share at any interval; only the fixed part is spread over the period:
  share = (fixed / period + per_event x rate) / (cores + per_event x rate), where rate is
  silver's with the rules. Silver with checks runs at that rate times (1 - share), so the
  cost is 1 - (1 - rules' cost) x (1 - share).
- **Baseline**: the original project's design, re-created inside `lakehouse/bench.py`: Kafka ->
  `from_json` -> the events as JSON files, and count and sum of the estimated resolution time
  by city and status (`outputMode("update")`) appended to a PostgreSQL table from
  `foreachBatch` (psycopg2). Catch-up: both queries with `availableNow` over the same topic.
  Freshness: its 20 s trigger and a 2 s trigger side by side, from the topic's end, at
  1,000 events/s. Its visible total is the latest row per group; "sum of appended rows" is what
  adding up the table gives, since update mode appends every changed group's running total
  again in every micro-batch.
- **Freshness**: the pipeline as `lakehouse stream` runs it (its two chained queries on the default
  trigger, the batch-log listener, the sync thread, the data-quality monitor), in-process, while a separate simulator
  process sends v1 events (no faults) at a steady rate and records when each event was made.
  The percentiles are those of the events made after a warm-up at the same rate (30 s in the
  full run): steady state, as the first micro-batches at a new rate compile their code and fill
  caches (in some of our runs they took 5-6 s instead of ~3 s). The table also gives the p95 with the
  warm-up's events; the baseline is measured the same way.
  Before it, one data-quality pass validates the rows already in the lake (steady state: a
  running stream's monitor would have validated them while catching up).
  PostgreSQL (`sum(event_count)` of `status_by_location`, every 0.2 s) and the dashboard's
  `/api/status-by-location` (the sum of its `event_count`, every 0.25 s) are polled; an event counts as visible at the
  first poll whose count reaches it, so each event's latency is that poll's start minus its
  creation time (resolution: the poll interval). Events still not visible when the wait after
  sending ends count with the last poll's time instead: the percentiles are then lower bounds,
  marked ">=". The per-hop model takes sampled creation times,
  finds the first bronze batch starting after each, the first refining batch (silver and gold)
  starting after that one ended, then the sync, and averages the waits and run times.
- **Dashboard**: the dashboard (`dashboard.cli.make_server`, served in a thread) runs in a process
  of its own; an asyncio client sends GETs over new loopback connections, cycling through the
  JSON endpoints the pages poll, first with one client, then with 50 at once; the time to open
  the TCP connection is kept apart, and so is the time to open a PostgreSQL connection (what a
  request would cost without the connections the dashboard keeps per server thread).
- **Cost**: every process is sampled each second: peak RSS of the Kafka and Spark JVMs and the
  Python processes, peak PSS summed over PostgreSQL's processes (shared memory counted once);
  CPU seconds over each process's life. Disk: bytes under each table's folder (data and Delta
  log) right after the catch-up, scaled to a million events (gold tables are aggregates and do
  not grow with events). Files per table at the end of the run: data files in the current
  snapshot, on disk (older versions' files stay until VACUUM), and Delta versions.
"""


def write_markdown(r: dict, path: Path) -> None:
    m, v = r["machine"], r.get("versions", {})
    lines = [
        "# Benchmarks",
        "",
        f"Written by `lakehouse bench{' --quick' if r['mode'] == 'quick' else ''}` "
        f"({'`make bench QUICK=1`' if r['mode'] == 'quick' else '`make bench`'}) on "
        f"{r['started_at'][:10]} ({r['started_at']}), in {r['elapsed_seconds'] / 60:.1f} minutes"
        + (" (tiny smoke-test scale)" if r["mode"] == "tiny" else "")
        + f"; {r['profile']['events']:,} pre-loaded events"
        + (" (at this scale each micro-batch's fixed costs weigh more than at the full run's). The full run "
           "(`make bench`) uses 1,000,000 events and adds a 10,000 events/s freshness run"
           if r["mode"] != "full" else ", and a 10,000 events/s freshness run")
        + "; the JSON with every figure is `bench-results/results.json`.",
        "",
        f"**Machine**: {m['cores']} cores ({m['cpu_model']}), {m['memory_bytes'] / 2**30:.1f} GiB memory, {m['os']}. "
        f"Shared with other work during the run: load average {m['load_average_at_start'][0]:.1f} at the start, "
        f"{m.get('load_average_at_end', [0])[0]:.1f} at the end; the CPUs were {m.get('cpu_busy_share', 0):.0%} busy, "
        f"{m.get('cpu_seconds_other_processes', 0):,.0f} CPU seconds of it by processes other than the benchmark's.",
        "",
        "**Versions**: " + ", ".join(f"{k.replace('_', ' ')} {val}" for k, val in v.items()) + ".",
        "",
        "## Results",
        "",
        "| section | measure | value | ratio / note |",
        "| --- | --- | --- | --- |",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in table_rows(r)],
        "",
        "## Goals",
        "",
        "| goal | measured | |",
        "| --- | --- | --- |",
        *[f"| {g['goal']} | {g['measured']} | {'met' if g['met'] else '**missed**'} |" for g in r.get("goals", [])],
        "",
        "## Where the time goes",
        "",
    ]
    for g in r.get("goals", []):
        lines.append(f"- **{g['goal']}** ({'met' if g['met'] else 'missed'}): {g['where']}.")
    prod = r.get("producer")
    if prod:
        lines += ["", "Producer, cProfile top 5 by own CPU time (all threads, "
                  f"{prod['profile']['events']:,} events, blocking waits left out):", "",
                  "| function | own CPU s | share |", "| --- | --- | --- |"]
        lines += [f"| `{t['function']}` | {t['self_seconds']:.2f} | {t['share']:.0%} |" for t in prod["profile"]["top5"]]
    for f in r.get("freshness", []):
        lines += ["", f"Pipeline batches while sending {f['rate_target']:,} events/s (trigger {f['trigger_s']:g} s):", "",
                  "| hop | completed batches | mean batch | biggest parts (ms, summed) |", "| --- | --- | --- | --- |"]
        for name, fig in f["layers"].items():
            if name == "sync":
                lines.append(f"| sync | {fig['runs']} | {_fmt_ms(fig['mean_run_ms'])} | |")
            else:
                parts = ", ".join(f"{k} {v:,}" for k, v in list(fig.get("parts_ms", {}).items())[:3])
                lines.append(f"| {name} | {fig['batches']} | {_fmt_ms(fig.get('mean_batch_ms'))} | {parts} |")
    if r.get("errors"):
        lines += ["", "## Could not run", ""] + [f"- {e['section']}: {e['error']}" for e in r["errors"]]
    lines += ["", METHOD]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def run_bench(mode: str, out_dir: Path, docs: Path) -> tuple[int, dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(mode, out_dir, docs)
    results = bench.run()
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_markdown(results, docs)
    print_table(results)
    print(f"results: {out_dir / 'results.json'}; report: {docs}; {results['elapsed_seconds'] / 60:.1f} minutes")
    return (1 if results["errors"] else 0), results


def _bench(args: argparse.Namespace) -> int:
    # Stopped by SIGTERM as by Ctrl-C: the private stack is torn down on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    out = args.out.resolve()
    docs = out / "benchmarks.md" if mode == "tiny" else REPO_ROOT / "docs" / "benchmarks.md"
    code, _ = run_bench(mode, out, docs)
    return code


def add_commands(sub) -> None:
    """Register this module's subcommands on the `lakehouse` parser."""
    p = sub.add_parser("bench", help="measure throughput, freshness and cost on a private stack (docs/benchmarks.md)",
                       description="Runs the benchmarks on a Kafka and PostgreSQL of its own (never a running "
                                   "`make stream`), prints a table and writes docs/benchmarks.md and "
                                   "DIR/results.json. Full: ~30 minutes; --quick: ~5.")
    p.add_argument("--quick", action="store_true", help="20,000 events, one freshness rate, shorter runs")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the smoke test's scale
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench-results", metavar="DIR",
                   help="where results.json goes (default bench-results/)")
    p.set_defaults(func=_bench)


# --- child processes -----------------------------------------------------------------

def _produce_child(spec: dict) -> int:
    """Send at a steady rate with the simulator's record stream and KafkaSink, noting when each
    event was made (every event up to 1,000/s, then one note per rate/1000 events)."""
    from simulator.cli import _records
    from simulator.producer import KafkaSink

    _exit_with_parent()
    args = _sim_args(["--duration", str(spec["seconds"]), "--rate", str(spec["rate"]), "--seed", str(spec["seed"])])
    sink = KafkaSink(spec["bootstrap"], spec["topic"])
    step = max(1, int(spec["rate"] // 1000))
    times, counts, n = [], [], 0
    for record in _records(args, None):
        sink.send(record)
        n += 1
        if n % step == 0:
            times.append(time.time())
            counts.append(n)
    if not counts or counts[-1] != n:
        times.append(time.time())
        counts.append(n)
    delivery = sink.close()
    Path(spec["out"]).write_text(json.dumps({"times": times, "counts": counts, "events": n,
                                             "delivered": delivery.delivered, "failed": delivery.failed_count}))
    return 0 if delivery.failed_count == 0 else 1


def _exit_with_parent() -> None:
    """A child of the bench ends when the bench does, even when the bench is killed outright."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="bench-parent-watch", daemon=True).start()


def _dashboard_child() -> int:
    from dashboard.cli import make_server

    _exit_with_parent()
    httpd = make_server("127.0.0.1", 0)
    print(httpd.server_address[1], flush=True)
    server = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True)
    server.start()
    server.join()
    return 0


if __name__ == "__main__":
    try:
        if sys.argv[1] == "produce":
            sys.exit(_produce_child(json.loads(sys.argv[2])))
        if sys.argv[1] == "dashboard":
            sys.exit(_dashboard_child())
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit("usage: python -m lakehouse.bench produce SPEC | dashboard")
