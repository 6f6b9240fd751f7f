"""The simulator against a real Kafka broker, with each of its two Kafka clients: every
record it reports sending is read back, and every injected fault is found by the sha256
the manifest gives for it."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import uuid
from collections import Counter, defaultdict
from typing import NamedTuple

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from kafka import KafkaAdminClient

from lakehouse.contracts import SEED_FIELDS, STATUS_COLORS, V1_FIELDS
from simulator import cli
from simulator.faults import FAULT_KINDS
from simulator.producer import PRODUCERS

pytestmark = pytest.mark.integration

PARTITIONS = 3
FIELDS = {"v1": list(V1_FIELDS), "seed": list(SEED_FIELDS)}


class Read(NamedTuple):
    key: bytes
    value: bytes
    partition: int


def create_topic(bootstrap: str) -> str:
    topic = f"simulator-test-{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}},
                            wait_for_metadata=True)
    finally:
        admin.close()
    return topic


def read_all(bootstrap: str, topic: str) -> tuple[list[Read], int]:
    """Every record of the topic, and the sum of its end offsets. Read with librdkafka, which
    decodes every codec (kafka-python would need the lz4 package for ConfluentSink's batches)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "max.partition.fetch.bytes": 4 * 1024 * 1024,
                         "fetch.max.bytes": 16 * 1024 * 1024})
    try:
        ends = {}
        for p in range(PARTITIONS):
            low, ends[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            assert low == 0
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        read = []
        position = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + 60
        while any(position[p] < ends[p] for p in ends):
            assert time.monotonic() < deadline, "timed out reading the topic back"
            for message in consumer.consume(num_messages=1000, timeout=1):
                assert message.error() is None, message.error()
                read.append(Read(message.key(), message.value(), message.partition()))
                position[message.partition()] = message.offset() + 1
        return read, sum(ends.values())
    finally:
        consumer.close()


@pytest.mark.parametrize("producer", list(PRODUCERS))
@pytest.mark.parametrize("fmt", ["v1", "seed"])
def test_every_record_is_read_back_and_matches_the_manifest_kind_by_kind(stack, tmp_path, fmt, producer):
    bootstrap = stack.settings.kafka_bootstrap_servers
    topic = create_topic(bootstrap)
    manifest_path = tmp_path / "manifest.json"
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--events", "1500", "--rate", "0", "--faults", "0.1", "--seed", "11",
                              "--servers", "60", "--format", fmt, "--topic", topic, "--producer", producer,
                              "--bootstrap-servers", bootstrap, "--manifest", str(manifest_path)])
    assert cli.run(args) == 0
    manifest = json.loads(manifest_path.read_text())
    assert manifest["params"]["producer"] == producer
    assert manifest["delivery"] == {"delivered": manifest["records"], "failed": 0, "errors": {}, "failed_records": []}

    read, end_offsets = read_all(bootstrap, topic)
    assert len(read) == end_offsets == manifest["records"]

    found = defaultdict(list)  # sha256 -> records with those exact bytes
    for record in read:
        found[hashlib.sha256(record.value).hexdigest()].append(record)

    matched = Counter()
    for injected in manifest["injected"]:
        copies = found[injected["sha256"]]
        assert copies, f"{injected['kind']} record of {injected['key']} not found"
        assert all(c.key == injected["key"].encode() for c in copies)
        if injected["kind"] == "duplicate":
            assert len(copies) >= 2
        matched[injected["kind"]] += 1
    assert dict(matched) == {kind: n for kind, n in manifest["faults"].items() if n}
    assert set(matched) == set(FAULT_KINDS)

    injected_bytes = Counter(i["sha256"] for i in manifest["injected"])
    clean = []
    for sha, records in found.items():
        clean.extend(records[injected_bytes[sha]:])
    assert len(clean) == manifest["clean_records"]
    for record in clean:
        message = json.loads(record.value)
        assert list(message) == FIELDS[fmt]
        if fmt == "v1":
            assert record.key == message["server_id"].encode()
            assert message["status_color"] in STATUS_COLORS
        else:
            assert record.key.startswith(b"srv-")

    partitions_of_key = defaultdict(set)
    for record in read:
        partitions_of_key[record.key].add(record.partition)
    assert all(len(p) == 1 for p in partitions_of_key.values())
    assert len({record.partition for record in read}) == PARTITIONS


@pytest.mark.parametrize("producer", list(PRODUCERS))
def test_a_missing_topic_exits_2_with_one_clear_line_instead_of_waiting_per_record(stack, capsys, producer):
    bootstrap = stack.settings.kafka_bootstrap_servers
    topic = f"simulator-missing-{uuid.uuid4().hex[:12]}"
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    started = time.monotonic()
    assert cli.run(parser.parse_args(["--events", "100", "--topic", topic, "--bootstrap-servers", bootstrap,
                                      "--producer", producer])) == 2
    assert time.monotonic() - started < 15
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: topic '{topic}' does not exist at {bootstrap}")
