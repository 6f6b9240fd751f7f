"""Every Delta table of the lakehouse, declared once: name, grain, keys, schema.

The pipeline, the checks, the serving sync, the CLI and docs/tables.md all read these
declarations; a column is never named in two places.
"""

from __future__ import annotations

from dataclasses import dataclass

from lakehouse.rules import MAX_MESSAGE_BYTES

# (column, Spark SQL type, description)
Column = tuple[str, str, str]


@dataclass(frozen=True)
class Table:
    name: str  # "layer.name"
    grain: str  # what one row is
    keys: tuple[str, ...]  # unique together
    columns: tuple[Column, ...]
    partition_by: tuple[str, ...] = ()
    serve: bool = False  # copied to PostgreSQL for the dashboard

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def column_names(self) -> list[str]:
        return [c[0] for c in self.columns]

    @property
    def ddl(self) -> str:
        return ", ".join(f"`{n}` {t}" for n, t, _ in self.columns)


KAFKA_COORDINATES: tuple[Column, ...] = (
    ("topic", "STRING", "Kafka topic the record came from"),
    ("partition", "INT", "Kafka partition"),
    ("offset", "BIGINT", "Kafka offset within the partition"),
)

BRONZE_EVENTS = Table(
    name="bronze.events",
    grain="one row per Kafka record, exactly as received",
    keys=("topic", "partition", "offset"),
    columns=(
        ("key", "BINARY", "record key as received (the server id)"),
        ("value", "BINARY", "record value as received"),
        ("value_text", "STRING", "the value decoded as UTF-8 (invalid bytes replaced)"),
        *KAFKA_COORDINATES,
        ("kafka_timestamp", "TIMESTAMP", "Kafka record timestamp"),
        ("headers", "ARRAY<STRUCT<key: STRING, value: BINARY>>", "record headers"),
        ("ingested_at", "TIMESTAMP", "when the pipeline wrote the row"),
        ("ingest_date", "DATE", "partition column: date of ingested_at (UTC)"),
    ),
    partition_by=("ingest_date",),
)

SILVER_EVENTS = Table(
    name="silver.events",
    grain="one row per distinct valid status event",
    keys=("event_key",),
    columns=(
        ("event_key", "STRING", "identity used for de-duplication: v1 event_id, or a hash of the seed-format record"),
        ("event_id", "STRING", "event id as sent (UUID for v1, a per-run counter for the seed format)"),
        ("server_id", "STRING", "server id (null for the seed format, which has none)"),
        ("server_type", "STRING", "one of the 13 server types"),
        ("country_code", "STRING", "ISO 3166 alpha-2 code of the data center's country"),
        ("country_name", "STRING", "country name"),
        ("city", "STRING", "data-center city"),
        ("status_color", "STRING", "Green, Orange or Red"),
        ("severity_level", "STRING", "Severity 3 (Green), 2 (Orange) or 1 (Red)"),
        ("estimated_resolution_time", "INT", "estimated issue resolution time"),
        ("event_time", "TIMESTAMP", "when the event happened (UTC)"),
        ("source_format", "STRING", "v1 or seed"),
        ("is_late", "BOOLEAN", "event time older than the lateness horizon when ingested"),
        *KAFKA_COORDINATES,
        ("ingested_at", "TIMESTAMP", "bronze ingestion time"),
    ),
)

SILVER_QUARANTINE = Table(
    name="silver.quarantine",
    grain="one row per bronze record that failed a quality rule",
    keys=("topic", "partition", "offset"),
    columns=(
        ("value", "BINARY", f"raw payload as received; of an oversized record, its first {MAX_MESSAGE_BYTES // 1024} "
                            "KB (bronze keeps it whole, at these Kafka coordinates)"),
        ("value_text", "STRING", "payload decoded as UTF-8 (invalid bytes replaced), for reading: its first 4,096 characters"),
        *KAFKA_COORDINATES,
        ("failed_rules", "ARRAY<STRING>", "names of the rules the record failed"),
        ("reason", "STRING", "readable reason"),
        ("ingested_at", "TIMESTAMP", "bronze ingestion time"),
        ("quarantined_at", "TIMESTAMP", "when the record was quarantined"),
    ),
)

GOLD_STATUS_BY_LOCATION = Table(
    name="gold.status_by_location",
    grain="one row per (country_code, country_name, city, status_color, severity_level)",
    keys=("country_code", "country_name", "city", "status_color", "severity_level"),
    columns=(
        ("country_code", "STRING", "country code"),
        ("country_name", "STRING", "country name"),
        ("city", "STRING", "city"),
        ("status_color", "STRING", "status colour"),
        ("severity_level", "STRING", "severity level"),
        ("event_count", "BIGINT", "number of events"),
        ("total_estimated_resolution_time", "BIGINT", "sum of estimated resolution times"),
    ),
    serve=True,
)

GOLD_STATUS_BY_MINUTE = Table(
    name="gold.status_by_minute",
    grain="one row per (one-minute event-time window, status_color, server_type)",
    keys=("window_start", "status_color", "server_type"),
    columns=(
        ("window_start", "TIMESTAMP", "start of the one-minute event-time window (UTC)"),
        ("window_end", "TIMESTAMP", "end of the window"),
        ("status_color", "STRING", "status colour"),
        ("server_type", "STRING", "server type"),
        ("event_count", "BIGINT", "number of events"),
        ("total_estimated_resolution_time", "BIGINT", "sum of estimated resolution times"),
        ("avg_estimated_resolution_time", "DOUBLE", "average estimated resolution time"),
        ("max_estimated_resolution_time", "INT", "maximum estimated resolution time"),
    ),
    serve=True,
)

GOLD_SERVER_STATE = Table(
    name="gold.server_state",
    grain="one row per server (v1 events; late events excluded)",
    keys=("server_id",),
    columns=(
        ("server_id", "STRING", "server id"),
        ("server_type", "STRING", "server type"),
        ("country_code", "STRING", "country code"),
        ("country_name", "STRING", "country name"),
        ("city", "STRING", "city"),
        ("status_color", "STRING", "latest status by event time"),
        ("severity_level", "STRING", "latest severity"),
        ("status_since", "TIMESTAMP", "event time at which the server entered its current status"),
        ("last_event_time", "TIMESTAMP", "event time of its latest event"),
        ("last_event_id", "STRING", "id of its latest event"),
        ("estimated_resolution_time", "INT", "latest estimated resolution time"),
    ),
    serve=True,
)

GOLD_INCIDENTS = Table(
    name="gold.incidents",
    grain="one row per incident: a server's stretch away from Green",
    keys=("incident_id",),
    columns=(
        ("incident_id", "STRING", "server id and start time"),
        ("server_id", "STRING", "server id"),
        ("server_type", "STRING", "server type"),
        ("country_code", "STRING", "country code"),
        ("country_name", "STRING", "country name"),
        ("city", "STRING", "city"),
        ("started_at", "TIMESTAMP", "event time the server left Green"),
        ("ended_at", "TIMESTAMP", "event time it returned to Green (null while open)"),
        ("duration_seconds", "BIGINT", "ended_at - started_at (null while open)"),
        ("worst_severity", "STRING", "worst severity seen during the incident"),
        ("is_open", "BOOLEAN", "still open"),
    ),
    serve=True,
)

QUALITY_RESULTS = Table(
    name="quality.results",
    grain="one row per expectation per Great Expectations validation (lakehouse/quality.py)",
    keys=("validation_id", "rule", "expectation"),
    columns=(
        ("validation_id", "STRING", "the validation: suite, the table's Delta id and the last version a pass "
                                     "covers (bronze, silver), or the table versions validated (gold)"),
        ("validated_at", "TIMESTAMP", "when the validation ran (UTC)"),
        ("suite", "STRING", "Great Expectations suite: the table, or a view computed from it"),
        ("table_name", "STRING", "the table whose rows were validated"),
        ("delta_version", "BIGINT", "version of that table validated (the last one a batch covers)"),
        ("batch_id", "BIGINT", "batch id of the data-quality stream that validated before the monitor read "
                                "table versions (older results); null since"),
        ("rule", "STRING", "the rule or layer check declared in lakehouse/rules.py"),
        ("policy", "STRING", "quarantine, warn or fail for a silver rule; check for a layer check"),
        ("expectation", "STRING", "the Great Expectations expectation and its column(s)"),
        ("success", "BOOLEAN", "the expectation held (false also when it could not be evaluated)"),
        ("observed_value", "STRING", "the observed value, as JSON"),
        ("element_count", "BIGINT", "rows validated"),
        ("unexpected_count", "BIGINT", "rows that failed the expectation"),
        ("unexpected_percent", "DOUBLE", "share of the rows that failed, in percent"),
        ("sample_rows", "STRING", "a few failing rows, as a JSON array"),
        ("reason", "STRING", "what a failure means, or why the expectation could not be evaluated"),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (
    BRONZE_EVENTS, SILVER_EVENTS, SILVER_QUARANTINE,
    GOLD_STATUS_BY_LOCATION, GOLD_STATUS_BY_MINUTE, GOLD_SERVER_STATE, GOLD_INCIDENTS,
    QUALITY_RESULTS,
)}


def markdown() -> str:
    """docs/tables.md: every table and the silver rules (tests/test_docs.py keeps the file equal to this)."""
    from lakehouse.rules import CHECKS, DUPLICATE_RULE, RULES, STAGES

    out = ["# Tables", "",
           "Generated from `lakehouse/tables.py` and `lakehouse/rules.py`; do not edit by hand. Regenerate with",
           "`.venv/bin/python -c 'from lakehouse.tables import markdown; print(markdown(), end=\"\")' > docs/tables.md`",
           "(`tests/test_docs.py` fails while this file differs). Tables live under `$LAKEHOUSE_ROOT/<layer>/<name>`.",
           ""]
    for t in TABLES.values():
        served = f"yes, as `{t.name.split('.', 1)[1]}`" if t.serve else "no"
        out += [f"## {t.name}", "", f"Grain: {t.grain}.", "",
                f"- keys: {', '.join(f'`{k}`' for k in t.keys)}",
                f"- partitioned by: {', '.join(f'`{p}`' for p in t.partition_by) or 'none'}",
                f"- served to PostgreSQL: {served}", "",
                "| column | type | description |", "| --- | --- | --- |"]
        out += [f"| `{n}` | `{typ}` | {d.replace('|', chr(92) + '|')} |" for n, typ, d in t.columns]
        out.append("")
    out += ["## Silver quality rules", "",
            "A record fails a rule when the rule's check is false or null. Stages run in order and a record is",
            "judged on the first stage it fails; `quarantine` routes it to `silver.quarantine`, `warn` keeps it,",
            "`fail` stops silver and gold (their query) before the batch is written (retried from the checkpoint on restart).",
            "Great Expectations validates each rule twice, from the same declaration (`lakehouse/quality.py`): on",
            "bronze, the records the rule would quarantine; on `silver.events`, the expectations listed.", "",
            "| rule | stage | policy | reason | expectations on silver.events |", "| --- | --- | --- | --- | --- |"]
    out += [f"| `{r.name}` | {r.stage} ({STAGES[r.stage]}) | {r.policy} | {r.reason} | "
            f"{', '.join(f'`{e.label}`' for e in r.expect) or 'none'}{f' (view `{r.view}`)' if r.view else ''} |"
            for r in (*RULES, DUPLICATE_RULE)]
    out += ["", "## Layer checks", "",
            "Validated by Great Expectations off the streaming threads; they route nothing, and their results",
            "go to `quality.results` like the rules'. A view is a frame computed from the table (`quality.VIEWS`).", "",
            "| check | table | view | expectations | a failure means |", "| --- | --- | --- | --- | --- |"]
    out += [f"| `{c.name}` | `{c.table}` | {f'`{c.view}`' if c.view else 'its rows'} | "
            f"{', '.join(f'`{e.label}`' for e in c.expect)} | {c.reason} |" for c in CHECKS]
    return "\n".join(out) + "\n"
