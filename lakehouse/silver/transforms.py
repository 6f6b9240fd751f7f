"""Silver: parse both wire formats into one schema, judge every record by the rules,
split valid from quarantined, and keep one row per event.

Pure ``DataFrame -> DataFrame`` functions; the streaming edge is ``silver.stream``.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from lakehouse.bronze.transforms import value_text as bronze_value_text
from lakehouse.contracts import SEED_DATETIME_FORMAT, V1_REQUIRED
from lakehouse.rules import DUPLICATE_RULE, MAX_MESSAGE_BYTES, RULES, Rule, json_type
from lakehouse.tables import KAFKA_COORDINATES, SILVER_EVENTS

SEED_REQUIRED = (
    "event_server_status_color_name_severity_level", "event_datetime", "event_server_type", "event_country_code",
    "event_country_name", "event_city_name", "event_estimated_issue_resolution_time", "event_id",
)
QUARANTINE_TEXT_LIMIT = 4096
COORDS = [name for name, _, _ in KAFKA_COORDINATES]  # a record's Kafka position: topic, partition, offset
SOURCE_COLUMNS = ("value", *COORDS, "ingested_at")  # what silver reads of a bronze row
# JSON fields whose type parse reads once per record, as ``json_type_<field>``: silver's
# fields and the rules (required_fields, field_types) use it, rather than each reading it again.
TYPED_FIELDS = tuple(dict.fromkeys((*V1_REQUIRED, *SEED_REQUIRED)))


_JSON_TYPES = {"string": "('STRING')", "int": "('TINYINT', 'SMALLINT', 'INT', 'BIGINT')", "timestamp": "('STRING')"}


def _get(path: str, typ: str = "string") -> str:
    """The field as ``typ`` only when its JSON type is right (a number is not read as a string,
    nor an array as text): a wrongly typed field is null here and caught by ``field_types``."""
    return f"CASE WHEN {json_type(path)} IN {_JSON_TYPES[typ]} THEN try_variant_get(fields.{path}, '$', '{typ}') END"


def _missing(fields: tuple[str, ...]) -> str:
    """The missing fields' names, comma-separated ('' when none): ``concat_ws`` skips nulls."""
    items = ", ".join(f"CASE WHEN {json_type(f)} IS NULL THEN '{f}' END" for f in fields)
    return f"concat_ws(', ', {items})"


def _by_format(v1: str, seed: str) -> F.Column:
    return F.expr(f"CASE fmt WHEN 'v1' THEN {v1} WHEN 'seed' THEN {seed} END")


def parse(bronze: DataFrame, *, seed_timezone: str = "UTC", late_after: str = "1 HOUR") -> DataFrame:
    """Bronze rows -> the same rows plus ``is_utf8`` (null when over the size limit: not
    scanned), ``v`` (VARIANT), ``fields`` (each of ``TYPED_FIELDS`` as a VARIANT; null when
    missing), ``fmt``, the clean event fields, and ``json_type_<field>`` for each of
    ``TYPED_FIELDS`` (its JSON type; null when the field is missing).

    The format is detected per record: v1 carries ``schema_version``, the original
    project's messages carry ``event_server_status_color_name_severity_level``. Original
    ``event_datetime`` values are local times without a zone, read in ``seed_timezone``.
    """
    packed = _get("event_server_status_color_name_severity_level")
    seed_time = f"to_utc_timestamp(try_to_timestamp({_get('event_datetime')}, '{_java_pattern()}'), '{seed_timezone}')"
    # A few withColumns, each a layer of columns that reads the layer before: every call is
    # one analysis of the plan (one call per column cost ~0.3 s of planning per batch, measured).
    return (
        bronze
        # Scanned once, here (the rule valid_utf8 reads it): not at all when over the size limit.
        .withColumn("is_utf8", F.expr(f"CASE WHEN octet_length(value) > {MAX_MESSAGE_BYTES} THEN NULL "
                                      f"ELSE coalesce(is_valid_utf8(CAST(value AS STRING)), false) END"))
        .withColumn("v", F.expr("CASE WHEN is_utf8 THEN try_parse_json(CAST(value AS STRING)) END"))
        # The known fields in one pass over the message's keys: a variant_get per field looks
        # its key up by decoding the object's keys one by one (the parse's main cost, profiled).
        .withColumn("fields", F.expr(f"try_variant_get(v, '$', 'STRUCT<{', '.join(f'{f}: VARIANT' for f in TYPED_FIELDS)}>')"))
        .withColumns({json_type(f): F.expr(f"schema_of_variant(fields.{f})") for f in TYPED_FIELDS})
        .withColumn("fmt", F.expr(
            f"CASE WHEN {json_type('schema_version')} IS NOT NULL THEN 'v1' "
            f"WHEN {json_type('event_server_status_color_name_severity_level')} IS NOT NULL THEN 'seed' END"))
        .withColumns({
            "missing_fields": _by_format(_missing(V1_REQUIRED), _missing(SEED_REQUIRED)),
            "event_id": F.expr(_get("event_id")),
            "server_id": _by_format(_get("server_id"), "CAST(NULL AS STRING)"),
            "server_type": _by_format(_get("server_type"), _get("event_server_type")),
            "country_code": _by_format(_get("country_code"), _get("event_country_code")),
            "country_name": _by_format(_get("country_name"), _get("event_country_name")),
            "city": _by_format(_get("city"), _get("event_city_name")),
            "status_color": _by_format(_get("status_color"), f"element_at(split({packed}, '[|]'), 1)"),
            "severity_level": _by_format(_get("severity_level"), f"element_at(split({packed}, '[|]'), 2)"),
            "estimated_resolution_time": _by_format(_get("estimated_resolution_time", "int"),
                                                    _get("event_estimated_issue_resolution_time", "int")),
            "event_time": _by_format(_get("event_time", "timestamp"), seed_time),
            "source_format": F.col("fmt"),
        })
        .withColumns({
            "event_key": _by_format("concat('v1:', event_id)", "concat('seed:', sha2(value, 256))"),
            "is_late": F.expr(f"event_time < ingested_at - INTERVAL {late_after}"),
        })
    )


def _java_pattern() -> str:
    return SEED_DATETIME_FORMAT.replace("%Y", "yyyy").replace("%m", "MM").replace("%d", "dd") \
        .replace("%H", "HH").replace("%M", "mm").replace("%S", "ss")


def _failures(rules: list[Rule]) -> str:
    """The names of the ``rules`` a record fails, comma-separated ('' when none)."""
    items = ", ".join(f"CASE WHEN coalesce({r.check}, false) THEN NULL ELSE '{r.name}' END" for r in rules)
    return f"concat_ws(',', {items})"


def _names(failures: str) -> str:
    return f"CASE WHEN {failures} = '' THEN CAST(array() AS ARRAY<STRING>) ELSE split({failures}, ',') END"


def judge(parsed: DataFrame, rules: tuple[Rule, ...] = RULES) -> DataFrame:
    """Add ``failed_rules`` (quarantine policy, first failing stage only), ``warnings`` and ``reason``.

    Built without higher-order functions (``filter``, ``transform``): Spark evaluates those
    outside whole-stage code generation, and a projection holding one is interpreted row by
    row, with the parsed message copied between stages (silver's split of 200,000 events,
    with the JVM flag of ``lakehouse.spark``: 8.6 -> 7.0 s, measured alternated)."""
    blocking = [r for r in rules if r.policy == "quarantine"]
    stages = sorted({r.stage for r in blocking})
    first_failing = "CASE " + " ".join(f"WHEN _stage{s} <> '' THEN _stage{s}" for s in stages) + " ELSE '' END"
    warn = [r for r in rules if r.policy == "warn"]
    reasons = ", ".join(
        f"CASE WHEN array_contains(failed_rules, '{r.name}') THEN "
        + (f"concat('{r.reason}: ', missing_fields)" if r.name == "required_fields" else f"'{r.reason}'")
        + " END" for r in blocking)
    return (parsed
            .withColumns({f"_stage{s}": F.expr(_failures([r for r in blocking if r.stage == s])) for s in stages})
            .withColumns({
                "failed_rules": F.expr(_names(first_failing)),
                "warnings": F.expr(_names(_failures(warn))) if warn else F.expr("CAST(array() AS ARRAY<STRING>)"),
            })
            .drop(*[f"_stage{s}" for s in stages])
            .withColumn("reason", F.expr(f"CASE WHEN size(failed_rules) = 0 THEN '' ELSE concat_ws('; ', {reasons}) END")))


def valid_events(judged: DataFrame) -> DataFrame:
    """Records that passed every blocking rule, in the silver.events schema."""
    return judged.where(F.size("failed_rules") == 0).select(*SILVER_EVENTS.column_names)


def quarantined(judged: DataFrame) -> DataFrame:
    """Records that failed a rule, in the silver.quarantine schema."""
    return judged.where(F.size("failed_rules") > 0).select(*_quarantine_columns())


def payload_text(limit: int) -> F.Column:
    """The first ``limit`` characters of the payload as bronze's ``value_text`` has it (UTF-8,
    invalid bytes replaced), decoded again from ``value`` rather than read: silver never reads
    bronze's text column (reading it for every record cost ~7% of silver with its rules on
    1M events, measured alternated), and a rejected record is rare. The cut ``value`` of an
    oversized record gives the same text: 4,096 characters take at most 16 KB."""
    return F.substring(bronze_value_text(), 1, limit)


def _quarantine_columns() -> list:
    return [
        "value",
        payload_text(QUARANTINE_TEXT_LIMIT).alias("value_text"),
        "topic", "partition", "offset", "failed_rules", "reason", "ingested_at",
        F.current_timestamp().alias("quarantined_at"),
    ]


# What silver.events and silver.quarantine take from a judged record.
_NUMBERED = list(dict.fromkeys([*SILVER_EVENTS.column_names, "value", *COORDS, "failed_rules", "reason",
                                "ingested_at"]))


def number_copies(judged: DataFrame) -> DataFrame:
    """The columns silver and its quarantine need, plus ``copy``: 1 for the first record of each
    event (by Kafka position) among those that passed every rule, 2, 3... for its later
    copies, null for records that failed a rule. One sort numbers them all, so silver can keep
    this frame and split it without ranking twice.

    The payload stays only on the records that failed a rule, cut to the size limit: the others go to
    silver.events, which has no payload, but for the rare copies of an event, which take it
    back from bronze with ``with_payload``. Sorting and keeping every record's payload cost
    ~1.9 of 10.5 s per 200,000 events (measured, caching alone). An oversized record (up to
    megabytes) is quarantined with its first ``MAX_MESSAGE_BYTES`` bytes: bronze keeps it
    whole, at the Kafka position the quarantine row gives. Taking it back whole from bronze
    cost silver with its rules ~12% of its time on 1M events with 1% faults of every kind
    (~1,000 records of ~1 MB): 14.6 -> 12.9 s, alternated.

    The window is partitioned by ``event_key`` first: its sort then compares rows by a prefix
    of the key, where a leading boolean left almost every comparison to the whole row (silver
    with its rules on 1M events, median of 10 alternated: 17.8 -> 16.8 s)."""
    valid = F.size("failed_rules") == 0
    w = Window.partitionBy("event_key", valid).orderBy("ingested_at", "topic", "partition", "offset")
    return (judged.select(*_NUMBERED)
            .withColumn("value", F.when(~valid, F.substring("value", 1, MAX_MESSAGE_BYTES)))
            .withColumn("copy", F.when(valid, F.row_number().over(w))))


def first_per_event(numbered: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(first record of each event, its later copies) of ``number_copies`` rows, without payload."""
    return numbered.where("copy = 1"), numbered.where("copy > 1")


def with_payload(rows: DataFrame, bronze: DataFrame) -> DataFrame:
    """``rows`` (few) with their payload again, from the bronze rows they came from (by Kafka
    position). Only their positions are broadcast to pick those bronze rows, so the bronze
    payloads are not shuffled, and a replay with millions of copies still fits."""
    payload = bronze.select(*COORDS, "value").join(F.broadcast(rows.select(*COORDS)), COORDS, "left_semi")
    return rows.drop("value").join(payload, COORDS).select(*rows.columns)


def as_duplicates(copies: DataFrame) -> DataFrame:
    """Later copies of events, with their payload taken back (``with_payload``) -> quarantine
    rows under the duplicate rule."""
    duplicate = F.concat(F.lit(DUPLICATE_RULE.reason + " (event_key "), F.col("event_key"), F.lit(")"))
    return (copies.withColumns({"failed_rules": F.array(F.lit(DUPLICATE_RULE.name)), "reason": duplicate})
            .select(*_quarantine_columns()))
