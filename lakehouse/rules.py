"""Quality rules for silver, declared once as data: name, stage, check, policy, reason.

Each check is a Spark SQL predicate over the columns that ``silver.transforms.parse``
adds (``v`` is the message parsed as a VARIANT, ``fmt`` its detected format). A record
fails a rule when the predicate is false or null. Content rules let a missing value pass:
a missing field is reported once, by ``required_fields``. Rules run in stages: a record that
fails a stage is judged on that stage alone (a message that is not JSON is not also
reported as missing every field).

Policies: ``quarantine`` routes the row to silver.quarantine with the rule's name;
``warn`` counts and keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

from lakehouse.contracts import SERVER_TYPES, SEVERITY_BY_STATUS, V1_SCHEMA_VERSION

MAX_MESSAGE_BYTES = 64 * 1024  # status events are well under 1 KB
FUTURE_TOLERANCE = "INTERVAL 5 MINUTES"  # clock skew we accept
# Original-format times are local times without a zone: up to UTC+14 ahead of UTC.
SEED_FUTURE_TOLERANCE = "INTERVAL 14 HOURS 5 MINUTES"


@dataclass(frozen=True)
class Rule:
    name: str
    stage: int  # 1 bytes, 2 JSON, 3 format, 4 content
    check: str  # Spark SQL predicate: true = pass
    reason: str  # one readable line
    policy: str = "quarantine"


def _in(values) -> str:
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


def _type(field: str) -> str:
    return f"schema_of_variant(variant_get(v, '$.{field}', 'variant'))"


_INTEGER = "('TINYINT', 'SMALLINT', 'INT', 'BIGINT')"
_V1_STRINGS = ("event_id", "server_id", "event_time", "server_type", "country_code", "country_name", "city",
               "status_color", "severity_level")
_SEED_STRINGS = ("event_server_status_color_name_severity_level", "event_datetime", "event_server_type",
                 "event_country_code", "event_country_name", "event_city_name", "event_id")
_SEVERITY_CASE = "CASE status_color " + " ".join(f"WHEN '{c}' THEN '{s}'" for c, s in SEVERITY_BY_STATUS.items()) + " END"


def _typed(field: str, types: str) -> str:
    """A missing field is the business of required_fields, not of this check."""
    return f"(variant_get(v, '$.{field}', 'variant') IS NULL OR {_type(field)} IN {types})"


def _strings_typed(fields: tuple[str, ...]) -> str:
    return " AND ".join(_typed(f, "('STRING')") for f in fields)


RULES: tuple[Rule, ...] = (
    Rule("valid_utf8", 1, "is_valid_utf8(CAST(value AS STRING))", "payload is not valid UTF-8"),
    Rule("message_size", 1, f"octet_length(value) <= {MAX_MESSAGE_BYTES}",
         f"payload is larger than {MAX_MESSAGE_BYTES} bytes"),
    Rule("json_object", 2, "v IS NOT NULL AND schema_of_variant(v) LIKE 'OBJECT%'",
         "payload is not a JSON object (malformed or truncated)"),
    Rule("known_format", 3, "fmt IS NOT NULL", "neither a v1 nor an original-format message"),
    Rule("required_fields", 4, "size(missing_fields) = 0", "required fields are missing"),
    Rule("field_types", 4,
         f"CASE fmt WHEN 'v1' THEN {_strings_typed(_V1_STRINGS)} AND {_typed('schema_version', _INTEGER)} "
         f"AND {_typed('estimated_resolution_time', _INTEGER)} "
         f"ELSE {_strings_typed(_SEED_STRINGS)} AND {_typed('event_estimated_issue_resolution_time', _INTEGER)} END",
         "a field has the wrong JSON type"),
    Rule("schema_version", 4, f"fmt = 'seed' OR try_variant_get(v, '$.schema_version', 'int') = {V1_SCHEMA_VERSION}",
         f"v1 message with a schema_version other than {V1_SCHEMA_VERSION}"),
    Rule("event_time_valid", 4, f"event_time IS NOT NULL OR NOT ({_type('event_time')} <=> 'STRING' "
                               f"OR {_type('event_datetime')} <=> 'STRING')",
         "event time cannot be parsed"),
    Rule("event_time_not_future", 4, f"event_time IS NULL OR event_time <= ingested_at + CASE fmt WHEN 'seed' THEN {SEED_FUTURE_TOLERANCE} ELSE {FUTURE_TOLERANCE} END",
         "event time is in the future"),
    Rule("status_known", 4, f"status_color IS NULL OR status_color IN {_in(SEVERITY_BY_STATUS)}",
         "unknown status colour"),
    Rule("severity_matches_status", 4, f"severity_level IS NULL OR severity_level = coalesce({_SEVERITY_CASE}, severity_level)",
         "severity level does not match the status colour"),
    Rule("server_type_known", 4, f"server_type IS NULL OR server_type IN {_in(SERVER_TYPES)}", "unknown server type"),
    Rule("country_code_format", 4, "country_code IS NULL OR country_code RLIKE '^[A-Z]{2}$'",
         "country code is not two capital letters"),
    Rule("resolution_time_range", 4, "estimated_resolution_time IS NULL OR estimated_resolution_time BETWEEN 0 AND 1440",
         "estimated resolution time outside 0..1440"),
)

# Not a row predicate: silver keeps one row per event_key; later copies are quarantined
# under this name with the reason below.
DUPLICATE_RULE = Rule("unique_event", 5, "", "duplicate of an event already in silver")

RULES_BY_NAME = {r.name: r for r in (*RULES, DUPLICATE_RULE)}


def validate_rules(rules: tuple[Rule, ...] = RULES) -> None:
    """Reject a broken declaration at start-up, naming the rule."""
    seen = set()
    for r in rules:
        if r.name in seen:
            raise ValueError(f"rule {r.name}: declared twice")
        seen.add(r.name)
        if r.policy not in ("quarantine", "warn"):
            raise ValueError(f"rule {r.name}: unknown policy {r.policy!r}")
        if r.stage not in (1, 2, 3, 4) or not r.check.strip():
            raise ValueError(f"rule {r.name}: needs a stage 1-4 and a check")
