"""Runs the layers in one Spark application: continuously, until nothing is left
(available-now), or rebuilt from bronze (replay).

Two streaming queries chained through bronze.events: ``bronze`` (Kafka -> the raw event
log) and ``refine`` (bronze -> silver -> gold, both layers in each micro-batch). A listener
logs one line per micro-batch per layer; a sync thread copies gold to PostgreSQL after
every gold batch, retrying with backoff while PostgreSQL is away.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import threading
import time
from pathlib import Path

from pyspark.sql.streaming import StreamingQueryListener

from lakehouse import quality, storage
from lakehouse.bronze import stream as bronze
from lakehouse.gold import stream as gold
from lakehouse.rules import validate_rules
from lakehouse.settings import ConfigError, Settings
from lakehouse.silver import stream as silver
from lakehouse.tables import BRONZE_EVENTS

log = logging.getLogger(__name__)
QUERIES = (bronze, gold)  # gold's query writes silver and gold


class BatchLog(StreamingQueryListener):
    """One structured log line per micro-batch per layer, and its figures for PostgreSQL."""

    def __init__(self, batches: queue.Queue, gold_done: threading.Event):
        self.batches, self.gold_done = batches, gold_done
        self.stats: dict = {}  # (query, batch id) -> {layer: figures}, from on_batch until the progress event

    def onQueryStarted(self, event):
        pass

    def onQueryProgress(self, event):
        p = event.progress
        layers = self.stats.pop((p.name, p.batchId), None)
        if p.numInputRows == 0 and layers is None:
            return
        lags = [int(float(s.metrics.get("maxOffsetsBehindLatest", 0) or 0)) for s in p.sources if s.metrics]
        for layer, extra in (layers or {p.name: {}}).items():
            fields = {"layer": layer, "query_id": str(p.id), "batch_id": p.batchId, "rows_in": p.numInputRows,
                      "rows_out": p.numInputRows, "quarantined": 0, "duplicates_dropped": 0,
                      "duration_ms": p.durationMs.get("triggerExecution", 0),
                      "kafka_lag": max(lags) if lags else None, **extra}
            log.info("batch", extra={"fields": fields})
            self.batches.put(fields)
        if p.name == gold.QUERY:
            self.gold_done.set()

    def onQueryIdle(self, event):
        pass

    def onQueryTerminated(self, event):
        pass

    def on_batch(self, layer: str, batch_id: int, figures: dict) -> None:
        """The refining query's figures for one layer of a batch, logged with the batch's progress."""
        self.stats.setdefault((gold.QUERY, batch_id), {})[layer] = figures


class Syncer(threading.Thread):
    """Copies gold to PostgreSQL after each gold batch; backs off while PostgreSQL is down."""

    def __init__(self, settings: Settings, batches: queue.Queue, wake: threading.Event):
        super().__init__(name="serving-sync", daemon=True)
        self.settings, self.batches, self.wake = settings, batches, wake
        self.stopping = threading.Event()
        self.conn = None
        self.pending: list[dict] = []

    def run(self) -> None:
        delay = 1.0
        while not self.stopping.is_set():
            self.wake.wait(timeout=max(self.settings.trigger_seconds, 1.0))
            self.wake.clear()
            try:
                self.sync_once()
                delay = 1.0
            except Exception as e:  # PostgreSQL away: keep the high-water mark, try again later
                log.warning("serving sync failed, retrying in %.0fs: %s", delay, str(e).splitlines()[0])
                self._close()
                self.stopping.wait(delay)
                delay = min(delay * 2, 30.0)

    def sync_once(self) -> None:
        from serving import sync

        if self.conn is None:
            self.conn = sync.connect(self.settings)
        while True:
            try:
                self.pending.append(self.batches.get_nowait())
            except queue.Empty:
                break
        written = sync.sync_all(self.settings, self.conn)
        sync.record_batches(self.conn, self.pending)
        self.pending.clear()
        changed = {k: v for k, v in written.items() if v is not None}
        if changed:
            log.info("synced to postgres", extra={"fields": changed})

    def _close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.join(timeout=60)
        self._close()


def _pidfile(settings: Settings) -> Path:
    return settings.home / "stream.pid"


def _claim(settings: Settings) -> None:
    from lakehouse.stack import read_pid

    pid = read_pid(_pidfile(settings))
    if pid and pid != os.getpid():
        raise ConfigError(f"`lakehouse stream` is already running (pid {pid}); stop it first")
    settings.home.mkdir(parents=True, exist_ok=True)
    _pidfile(settings).write_text(str(os.getpid()))


def _session(settings: Settings):
    from lakehouse.spark import get_spark

    validate_rules()
    quality.interval_seconds()  # a bad LAKEHOUSE_DQ_* setting is refused before Spark starts
    quality.sample_rows()
    spark = get_spark("lakehouse-stream", settings)
    quality.compile_rules(spark)
    storage.ensure_tables(spark, settings)
    return spark


LEGACY_QUERIES = ("silver", "gold")  # the checkpoints of separate silver and gold queries (before `refine`)


def _refuse_legacy_checkpoints(settings: Settings) -> None:
    """A lake whose silver and gold were written by separate queries has no `refine` checkpoint:
    started as is, the query would read bronze from its start again and quarantine every event
    as a duplicate. A replay moves it over (it leaves `refine` a starting version)."""
    if Path(settings.checkpoint_path(gold.QUERY)).exists() or storage.start_marker(settings, gold.QUERY).exists():
        return
    if any(Path(settings.checkpoint_path(q)).exists() for q in LEGACY_QUERIES):
        raise ConfigError("this lake's silver and gold were written by the older separate silver and gold "
                          "streams; run `lakehouse replay` once (it rebuilds them from bronze and moves the "
                          "stream over), then start the stream again")


def run(settings: Settings, *, available_now: bool = False) -> int:
    """``lakehouse stream``: all layers, until Ctrl-C/SIGTERM or, with available_now, until caught up."""
    _claim(settings)
    try:
        _refuse_legacy_checkpoints(settings)
        spark = _session(settings)
        batches: queue.Queue = queue.Queue()
        gold_done = threading.Event()
        listener = BatchLog(batches, gold_done)
        spark.streams.addListener(listener)
        on_batch = listener.on_batch

        syncer = Syncer(settings, batches, gold_done)
        try:
            if available_now:
                for layer in QUERIES:
                    if _ready(spark, settings, layer):
                        try:
                            layer.start(spark, settings, {"availableNow": True}, on_batch).awaitTermination()
                        except Exception:
                            failure = quality.take_failure()  # policy fail: one clear message, not a trace
                            if failure is None:
                                raise
                            quality.record_stop(spark, settings, failure)
                            raise failure from None
                time.sleep(0.5)  # let the listener deliver the last progress events
                try:
                    syncer.sync_once()
                except Exception as e:
                    log.error("tables are up to date, but the copy to PostgreSQL failed (run `lakehouse sync` "
                              "when it is back): %s", str(e).splitlines()[0])
                    return 1
                finally:
                    syncer._close()
                return 0
            syncer.start()
            monitor = quality.start_monitor(spark, settings)  # Great Expectations, off the streaming threads
            try:
                code = _supervise(spark, settings, on_batch)
            finally:
                if monitor is not None:
                    monitor.stop()
            syncer.stop()
            return code
        finally:
            spark.streams.removeListener(listener)
    finally:
        _pidfile(settings).unlink(missing_ok=True)


def _ready(spark, settings: Settings, layer) -> bool:
    return layer.SOURCE is None or storage.ready_to_stream(spark, settings, layer.SOURCE, layer.QUERY)


def _supervise(spark, settings: Settings, on_batch) -> int:
    """Run the two queries; restart one that fails (Kafka away, ...) from its checkpoint.
    After a replay, a layer starts once its source has a version the replay did not cover."""
    trigger = {"processingTime": f"{settings.trigger_seconds} seconds"}
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    queries = {layer: layer.start(spark, settings, trigger, on_batch) if _ready(spark, settings, layer) else None
               for layer in QUERIES}
    log.info("streaming", extra={"fields": {"topic": settings.kafka_topic, "root": settings.root,
                                            "trigger_s": settings.trigger_seconds}})
    retry_at: dict = {}
    stopped: set = set()  # layers stopped by a rule with policy fail: they wait for a restart
    while not stop.wait(1.0):
        for layer, q in list(queries.items()):
            if layer in stopped:
                continue
            if q is None:
                if _ready(spark, settings, layer):
                    queries[layer] = layer.start(spark, settings, trigger, on_batch)
                continue
            if q.isActive:
                continue
            failure = quality.take_failure() if layer is gold else None
            if failure is not None:
                log.error(str(failure))
                quality.record_stop(spark, settings, failure)
                stopped.add(layer)
                continue
            if layer not in retry_at:
                err = q.exception()
                log.error("query failed, restarting from its checkpoint in 5s",
                          extra={"fields": {"layer": layer.QUERY, "error": str(err).splitlines()[0] if err else None}})
                retry_at[layer] = time.monotonic() + 5
            elif time.monotonic() >= retry_at.pop(layer):
                queries[layer] = layer.start(spark, settings, trigger, on_batch)
    log.info("stopping between batches")
    for q in filter(None, queries.values()):
        deadline = time.monotonic() + 60
        while q.isActive and q.status.get("isTriggerActive") and time.monotonic() < deadline:
            time.sleep(0.2)
        q.stop()
    return 0


def replay(settings: Settings) -> dict:
    """``lakehouse replay``: rebuild silver and gold from bronze, as new table versions."""
    _claim(settings)
    try:
        spark = _session(settings)
        bronze_version = storage.version(spark, settings, BRONZE_EVENTS.name)
        snapshot = spark.read.format("delta").option("versionAsOf", bronze_version) \
            .load(settings.table_path(BRONZE_EVENTS.name))
        figures = silver.rebuild(snapshot, settings)
        gold.rebuild(spark, settings)
        storage.restart_after_replay(settings, gold.QUERY, bronze_version + 1)
        for legacy in LEGACY_QUERIES:
            shutil.rmtree(settings.checkpoint_path(legacy), ignore_errors=True)
            storage.start_marker(settings, legacy).unlink(missing_ok=True)
        figures["bronze_version"] = bronze_version
        try:
            from serving import sync

            sync.sync_all(settings)
        except Exception as e:
            log.warning("replay done, but the serving sync failed (it catches up on the next stream or "
                        "`lakehouse sync`): %s", str(e).splitlines()[0])
        return figures
    finally:
        _pidfile(settings).unlink(missing_ok=True)
