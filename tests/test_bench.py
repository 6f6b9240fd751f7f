"""Smoke test of `lakehouse bench` at a tiny scale: the whole machinery runs on its own private
stack and the result JSON carries every figure. No timing is asserted: the figures depend on
the machine."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.integration

NUMBERS = [
    "producer.events_per_s", "producer.generation_only_events_per_s", "producer.fraction_of_goal",
    "producer.mean_message_bytes.clean_v1", "producer.profile.cpu_seconds_profiled",
    "ceiling.events_per_s", "ceiling.seconds",
    *(f"pipeline.layers.{layer}.{k}" for layer in ("bronze", "silver", "gold")
      for k in ("seconds", "events_per_s", "fraction_of_ceiling", "batches")),
    "pipeline.sync.seconds", "pipeline.sync.events_per_s",
    "pipeline.whole.events_per_s", "pipeline.whole.fraction_of_ceiling", "pipeline.whole_with_sync.fraction_of_ceiling",
    *(f"quality_overhead.{k}" for k in ("without_events_per_s", "with_events_per_s", "with_rules_only_events_per_s",
                                        "expectations_seconds", "monitor_share", "cost", "rules_cost")),
    "baseline_catch_up.events_per_s", "baseline_catch_up.fraction_of_ceiling",
    *(f"baseline_freshness.{t}.{p}" for t in ("long_trigger", "short_trigger") for p in ("p50", "p95", "p99")),
    "baseline_freshness.double_count.ratio", "baseline_freshness.double_count.sum_of_appended_rows",
    "dashboard.p50_ms", "dashboard.p95_ms", "dashboard.p99_ms", "dashboard.throughput_rps",
    "dashboard.single_client.p50_ms", "dashboard.pg_connect_ms",
    *(f"cost_disk_per_million_events.{t}" for t in ("bronze.events", "silver.events", "silver.quarantine",
                                                   "gold.status_by_location", "kafka topic")),
    *(f"cost_files.{t}.{k}" for t in ("bronze.events", "silver.events", "gold.server_state")
      for k in ("files_in_snapshot", "files_on_disk", "versions")),
    "machine.cores", "machine.memory_bytes", "elapsed_seconds",
]
TEXTS = ["machine.cpu_model", "versions.python", "versions.spark", "versions.delta_jar", "versions.kafka_broker",
         "versions.postgresql", "started_at"]
MEMORY = ["kafka broker (JVM)", "spark driver (JVM)", "postgresql (all processes)", "python: bench + pipeline driver",
          "python: dashboard", "python: simulator (steady rate)"]


def figure(results: dict, path: str):
    value = results
    for part in path.split(".") if not path.startswith("cost_") else _cost_path(path):
        assert isinstance(value, dict) and part in value, f"{path}: no {part!r}"
        value = value[part]
    return value


def _cost_path(path: str) -> list[str]:
    """cost_disk_per_million_events.bronze.events: table names contain a dot."""
    section, rest = path.split(".", 1)
    if section == "cost_files":
        table, key = rest.rsplit(".", 1)
        return [section, table, key]
    return [section, rest]


def test_tiny_bench_reports_every_figure(spark, tmp_path):
    from lakehouse import bench

    before = {k: os.environ.get(k) for k in bench.PRIVATE_VARS}
    code, results = bench.run_bench("tiny", tmp_path, tmp_path / "benchmarks.md")
    assert {k: os.environ.get(k) for k in bench.PRIVATE_VARS} == before, "the private stack's settings leaked"
    assert results["errors"] == [] and code == 0, results["errors"]

    saved = json.loads((tmp_path / "results.json").read_text())
    for path in NUMBERS:
        value = figure(saved, path)
        assert isinstance(value, int | float) and not isinstance(value, bool), (path, value)
    for path in TEXTS:
        assert isinstance(figure(saved, path), str) and figure(saved, path), path
    assert saved["producer"]["profile"]["top5"], "no producer profile"
    assert set(MEMORY) <= set(saved["cost_memory"]["peak_bytes"]), saved["cost_memory"]["peak_bytes"]
    (fresh,) = saved["freshness"]
    for probe in ("postgres", "api"):
        for p in ("p50", "p95", "p99"):
            assert isinstance(fresh[probe][p], int | float), (probe, p, fresh[probe])
    assert {"bronze", "refine", "sync"} <= set(fresh["layers"])  # per query: refine writes silver and gold
    assert {g["goal"].split(" ")[0] for g in saved["goals"]} == {"whole", "freshness", "dashboard", "producer",
                                                                 "data-quality"}
    assert all(isinstance(g["met"], bool) and g["where"] for g in saved["goals"])

    report = (tmp_path / "benchmarks.md").read_text()
    for heading in ("# Benchmarks", "## Results", "## Goals", "## Where the time goes", "**Machine**", "**Versions**"):
        assert heading in report, heading
