"""Delivering records: to Kafka, or to a JSON-lines file, at a steady rate.

Two Kafka clients stand behind one contract: ``KafkaSink`` (kafka-python, pure Python, the
default) and ``ConfluentSink`` (confluent-kafka, on librdkafka, several times faster).
Every record ends up counted as delivered or failed: Kafka delivery is confirmed by the
broker (acks=all, idempotent, retried by the client until ``DELIVERY_TIMEOUT_MS``) and
reported through the client's callbacks, never dropped silently. Records still
unconfirmed when the final flush gives up count as failed too: kafka-python 3.0.12's
idempotent producer never expires batches that were in flight when the broker went away,
and librdkafka gets the same deadline rather than trust.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import TypeVar

from confluent_kafka import KafkaError as ConfluentError
from confluent_kafka import KafkaException as ConfluentException
from confluent_kafka import Producer as ConfluentProducer
from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from lakehouse.settings import ConfigError
from simulator.faults import Record

# kafka-python 3.x waits 30 s to bootstrap by default; a missing broker should say so sooner.
BOOTSTRAP_TIMEOUT_MS = 5_000
MAX_BLOCK_MS = 5_000  # how long send() may wait for topic metadata
REQUEST_TIMEOUT_MS = 10_000
DELIVERY_TIMEOUT_MS = 30_000  # >= request timeout + linger, per the client's docs
FLUSH_GRACE_S = 5  # past the delivery timeout, the final flush stops waiting
# Above the client's default 1 MiB so the ~1 MB oversize fault leaves the producer.
MAX_REQUEST_SIZE = 2 * 1024 * 1024
WAKE_UPS_PER_SECOND = 100  # pacing sleeps per batch, not per event
# librdkafka only: lz4 is the cheapest codec to compress; the broker (4.1) and Spark's Kafka
# source (kafka-clients 3.9) both ship lz4-java. kafka-python reads it only with the `lz4` package.
CONFLUENT_COMPRESSION = "lz4"
QUEUE_FULL_WAIT_S = 0.05  # produce() refused for a full local queue: serve deliveries, retry
LIBRDKAFKA_LOG = logging.getLogger("simulator.librdkafka")  # librdkafka's own log, served by poll()

T = TypeVar("T")


class BrokerUnreachable(ConfigError):
    def __init__(self, bootstrap_servers: str):
        super().__init__(f"Kafka broker at {bootstrap_servers} is unreachable; start it with "
                         "`lakehouse stack up` or set KAFKA_BOOTSTRAP_SERVERS")


class TopicMissing(ConfigError):
    def __init__(self, topic: str, bootstrap_servers: str):
        super().__init__(f"topic {topic!r} does not exist at {bootstrap_servers} and the broker does not "
                         "create topics on demand; create it first (`lakehouse stack up` creates $KAFKA_TOPIC)")


class Delivery:
    """Delivered and failed counts, safe to update from the producer's I/O thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.delivered = 0
        self.errors: Counter[str] = Counter()
        self.failed_records: list[dict] = []  # so a consumer can tell lost from quarantined

    def ok(self) -> None:
        with self._lock:
            self.delivered += 1

    def failed(self, record: Record, error: BaseException) -> None:
        self.failed_as(record, type(error).__name__, str(error))

    def failed_as(self, record: Record, kind: str, message: str) -> None:
        """``kind`` is what the errors are counted by: an exception class, a librdkafka code."""
        with self._lock:
            self.errors[kind] += 1
            self.failed_records.append({"key": record.key.decode("utf-8"), "sha256": record.sha256,
                                        "fault": record.fault, "error": message})

    @property
    def failed_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict:
        return {"delivered": self.delivered, "failed": self.failed_count,
                "errors": dict(self.errors), "failed_records": self.failed_records}


@contextmanager
def _quiet_kafka_logs():
    """The client logs every refused bootstrap attempt; our one-line error says it better."""
    logger = logging.getLogger("kafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class KafkaSink:
    """Sends records keyed by server id. Raises BrokerUnreachable or TopicMissing within
    seconds rather than letting every send wait for metadata that will not come."""

    def __init__(self, bootstrap_servers: str, topic: str):
        self.topic = topic
        self.delivery = Delivery()
        self._pending: dict[int, Record] = {}  # sent, not yet settled; dict.pop settles once
        self._ids = itertools.count()
        try:
            with _quiet_kafka_logs():
                self._producer = KafkaProducer(
                    bootstrap_servers=bootstrap_servers,
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=10,
                    batch_size=256 * 1024,
                    compression_type="gzip",  # the one codec the stdlib covers
                    max_request_size=MAX_REQUEST_SIZE,
                    bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
                    max_block_ms=MAX_BLOCK_MS,
                    request_timeout_ms=REQUEST_TIMEOUT_MS,
                    delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
                )
        except KafkaTimeoutError as error:
            raise BrokerUnreachable(bootstrap_servers) from error
        try:
            with _quiet_kafka_logs():
                self._producer.partitions_for(topic)
        except KafkaTimeoutError as error:
            self._producer.close()
            raise TopicMissing(topic, bootstrap_servers) from error

    def send(self, record: Record) -> None:
        try:
            future = self._producer.send(self.topic, key=record.key, value=record.value)
        except KafkaError as error:  # no metadata within MAX_BLOCK_MS, too large
            self.delivery.failed(record, error)
            return
        key = next(self._ids)
        self._pending[key] = record
        future.add_callback(self._delivered, key)
        future.add_errback(self._failed, key)

    def _delivered(self, key: int, _metadata: object) -> None:
        if self._pending.pop(key, None) is not None:
            self.delivery.ok()

    def _failed(self, key: int, error: BaseException) -> None:
        record = self._pending.pop(key, None)
        if record is not None:
            self.delivery.failed(record, error)

    def close(self) -> Delivery:
        """Waits for every record to be acknowledged or to fail, at most the delivery
        timeout and a grace period; whatever is still unconfirmed then counts as failed."""
        try:
            self._producer.flush(timeout=DELIVERY_TIMEOUT_MS / 1000 + FLUSH_GRACE_S)
        except KafkaTimeoutError:
            unconfirmed = KafkaTimeoutError("not acknowledged when the final flush gave up")
            for key in list(self._pending):
                self._failed(key, unconfirmed)
            # close() flushes first and times out the same way; the stalled sender is a
            # daemon thread and ends with the process.
            with suppress(KafkaTimeoutError):
                self._producer.close(timeout=0)
            return self.delivery
        self._producer.close()
        return self.delivery


class ConfluentSink:
    """KafkaSink's contract on librdkafka: records keyed by server id, acks=all, idempotent,
    every record settled once as delivered or failed (counted by librdkafka error code),
    BrokerUnreachable or TopicMissing within seconds. Delivery reports are served by
    ``poll()`` in this thread, after every send, and by the final flush."""

    def __init__(self, bootstrap_servers: str, topic: str):
        self.topic = topic
        self.delivery = Delivery()
        self._pending: dict[int, Record] = {}  # sent, not yet settled; dict.pop settles once
        self._ids = itertools.count()
        self._producer = ConfluentProducer({
            "bootstrap.servers": bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 10,
            "batch.size": 1_000_000,  # bytes per partition batch, before compression
            "batch.num.messages": 10_000,
            "compression.type": CONFLUENT_COMPRESSION,
            "message.max.bytes": MAX_REQUEST_SIZE,  # the ~1 MB oversize fault must leave too
            "request.timeout.ms": REQUEST_TIMEOUT_MS,
            "message.timeout.ms": DELIVERY_TIMEOUT_MS,  # then the record fails: _MSG_TIMED_OUT
            "allow.auto.create.topics": False,
            # Its log goes through Python logging, not straight to stderr: a refused
            # bootstrap would otherwise print a line every few milliseconds.
            "logger": LIBRDKAFKA_LOG,
        })
        try:
            metadata = self._producer.list_topics(topic, timeout=BOOTSTRAP_TIMEOUT_MS / 1000)
        except ConfluentException as error:  # _TRANSPORT (refused) or _TIMED_OUT
            raise BrokerUnreachable(bootstrap_servers) from error
        found = metadata.topics.get(topic)
        if found is None or (found.error is not None and found.error.code() == ConfluentError.UNKNOWN_TOPIC_OR_PART):
            raise TopicMissing(topic, bootstrap_servers)

    def send(self, record: Record) -> None:
        key = next(self._ids)
        self._pending[key] = record
        settle = partial(self._settled, key)
        while True:
            try:
                self._producer.produce(self.topic, record.value, record.key, on_delivery=settle)
                break
            except BufferError:  # queue.buffering.max.messages reached: let deliveries drain it
                self._producer.poll(QUEUE_FULL_WAIT_S)
            except ConfluentException as exception:  # refused at once: too large, fatal producer state
                self._settled(key, exception.args[0], None)
                return
        self._producer.poll(0)

    def _settled(self, key: int, error: ConfluentError | None, _message: object) -> None:
        record = self._pending.pop(key, None)
        if record is None:
            return
        if error is None:
            self.delivery.ok()
        else:
            self.delivery.failed_as(record, error.name(), error.str())

    def close(self) -> Delivery:
        """Waits for every delivery report, at most the delivery timeout and a grace period;
        whatever is still unconfirmed then counts as failed and is purged."""
        self._producer.flush(DELIVERY_TIMEOUT_MS / 1000 + FLUSH_GRACE_S)
        if self._pending:
            for key in list(self._pending):
                record = self._pending.pop(key)
                self.delivery.failed_as(record, "FlushTimeout", "not acknowledged when the final flush gave up")
            # Purged records are reported as failed (_PURGE_*), to callbacks that find them settled.
            self._producer.purge()
            self._producer.poll(0)
        self._producer.close()
        return self.delivery


PRODUCERS = {"kafka-python": KafkaSink, "confluent": ConfluentSink}


class FileSink:
    """One message per line, bytes as sent (no message contains a newline byte)."""

    def __init__(self, path: Path):
        self.delivery = Delivery()
        self._file = open(path, "wb")  # noqa: SIM115 - open across send() calls, closed by close()

    def send(self, record: Record) -> None:
        self._file.write(record.value + b"\n")
        self.delivery.ok()

    def close(self) -> Delivery:
        self._file.close()
        return self.delivery


def paced(items: Iterable[T], rate: float, duration: float | None = None) -> Iterator[T]:
    """Yields ``items`` at ``rate`` per second (0: as fast as possible) for at most
    ``duration`` seconds. It sleeps between small batches toward an absolute schedule,
    so sleep overshoot never accumulates and high rates stay accurate."""
    iterator = iter(items)
    batch = max(1, int(rate // WAKE_UPS_PER_SECOND)) if rate else 1_000
    started = time.monotonic()
    for i in itertools.count():
        if i % batch == 0:
            elapsed = time.monotonic() - started
            if rate and i / rate > elapsed:
                time.sleep(i / rate - elapsed)
                elapsed = i / rate
            if duration is not None and elapsed >= duration:
                return
        try:
            yield next(iterator)
        except StopIteration:
            return
