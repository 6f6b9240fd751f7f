"""Quality rules, declared once as data: the silver routing rules and the layer checks.

**Silver rules** (``RULES``): name, stage, check, reason, policy. Each check is a Spark SQL
predicate over the columns that ``silver.transforms.parse`` adds (``is_utf8`` whether the
payload is valid UTF-8, ``v`` the message parsed as a VARIANT, ``fields`` its known fields
as VARIANTs, ``fmt`` its detected format, ``json_type_<field>`` a field's JSON type, each
read once per record). A record fails a rule when the predicate is false or null. Content
rules let a missing value pass: a missing field is reported once, by ``required_fields``.
Rules run in stages: a record that fails a stage is judged on that stage alone (a message
that is not JSON is not also reported as missing every field).

Policies: ``quarantine`` routes the row to silver.quarantine with the rule's name;
``warn`` counts and keeps it; ``fail`` stops the silver layer before it writes anything of
the batch, naming the rule and showing sample records (the batch is retried from the
checkpoint when the stream restarts after the fix).

The same declarations build the Great Expectations suites (``lakehouse/quality.py``), so
no rule is written twice:

* on bronze, every silver rule becomes "no record of the batch fails this rule" (the
  records silver quarantines under it), computed from ``check`` with the stage order;
* on silver.events, a rule's ``expect`` (expectations on the clean columns) says that
  nothing it guards slipped through. A check given as an ``Expect`` (``in_set``,
  ``between``, ``matches``) is both: its row predicate routes records, its expectation
  validates the table.

**Layer checks** (``CHECKS``): expectations that route nothing, validated by Great
Expectations off the streaming threads: bronze (Kafka coordinates, the share of records
that parse, offsets without gaps), gold (no negative totals, consistency with silver and
between gold tables). A check on a ``view`` validates a frame that ``quality.VIEWS``
computes from its table (per-partition offsets, layer totals, open incidents).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from lakehouse.contracts import SERVER_TYPES, SEVERITY_BY_STATUS, V1_SCHEMA_VERSION

MAX_MESSAGE_BYTES = 64 * 1024  # status events are well under 1 KB
FUTURE_TOLERANCE = dt.timedelta(minutes=5)  # clock skew we accept
# Original-format times are local times without a zone: up to UTC+14 ahead of UTC.
SEED_FUTURE_TOLERANCE = dt.timedelta(hours=14, minutes=5)
EARLIEST_EVENT_TIME = dt.datetime(2000, 1, 1)  # older event times are taken for broken clocks
MAX_RESOLUTION_MINUTES = 1440
PARSE_SHARE = 0.9  # bronze: at least this share of a batch must parse (valid UTF-8 JSON objects)

POLICIES = ("quarantine", "warn", "fail")
STAGES = {1: "bytes", 2: "JSON", 3: "format", 4: "content", 5: "duplicates"}


def _interval(t: dt.timedelta) -> str:
    minutes = int(t.total_seconds()) // 60
    return f"INTERVAL {minutes // 60} HOURS {minutes % 60} MINUTES"


def _in(values) -> str:
    return "(" + ", ".join("'" + str(v).replace("'", "''") + "'" for v in values) + ")"


# --- expectations as data --------------------------------------------------------------

# Great Expectations expectation classes the declarations may use (great_expectations.expectations.*).
EXPECTATIONS = (
    "ExpectColumnValuesToNotBeNull", "ExpectColumnValuesToBeInSet", "ExpectColumnValuesToNotBeInSet",
    "ExpectColumnValuesToBeBetween", "ExpectColumnValuesToMatchRegex", "ExpectColumnValuesToBeUnique",
    "ExpectColumnPairValuesToBeInSet", "ExpectColumnPairValuesToBeEqual",
)


@dataclass(frozen=True)
class Now:
    """A bound relative to the time of validation: now (UTC) + offset."""
    offset: dt.timedelta = dt.timedelta(0)

    def resolve(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC).replace(tzinfo=None) + self.offset


@dataclass(frozen=True)
class Expect:
    """One Great Expectations expectation as data: its class name and keyword arguments."""
    kind: str
    args: tuple[tuple[str, object], ...] = ()
    predicate: str | None = None  # the same constraint as a Spark SQL row predicate (null passes), if any

    @property
    def kwargs(self) -> dict:
        return dict(self.args)

    @property
    def columns(self) -> tuple[str, ...]:
        kw = self.kwargs
        return tuple(kw[k] for k in ("column", "column_A", "column_B") if k in kw)

    @property
    def label(self) -> str:
        """e.g. ExpectColumnValuesToBeInSet(status_color): unique within a rule."""
        return f"{self.kind}({', '.join(self.columns)})"


def _expect(kind: str, predicate: str | None = None, **kwargs) -> Expect:
    return Expect(kind, tuple((k, v) for k, v in kwargs.items() if v is not None), predicate)


def in_set(column: str, values, *, mostly: float | None = None) -> Expect:
    values = tuple(values)
    return _expect("ExpectColumnValuesToBeInSet", f"{column} IS NULL OR {column} IN {_in(values)}",
                   column=column, value_set=values, mostly=mostly)


def not_in_set(column: str, values) -> Expect:
    values = tuple(values)
    return _expect("ExpectColumnValuesToNotBeInSet", f"{column} IS NULL OR {column} NOT IN {_in(values)}",
                   column=column, value_set=values)


def between(column: str, min_value=None, max_value=None) -> Expect:
    predicate = None
    if isinstance(min_value, int) and isinstance(max_value, int):
        predicate = f"{column} IS NULL OR {column} BETWEEN {min_value} AND {max_value}"
    elif isinstance(min_value, int) and max_value is None:
        predicate = f"{column} IS NULL OR {column} >= {min_value}"
    return _expect("ExpectColumnValuesToBeBetween", predicate, column=column, min_value=min_value, max_value=max_value)


def matches(column: str, regex: str) -> Expect:
    return _expect("ExpectColumnValuesToMatchRegex", f"{column} IS NULL OR {column} RLIKE '{regex}'",
                   column=column, regex=regex)


def not_null(column: str) -> Expect:
    return _expect("ExpectColumnValuesToNotBeNull", f"{column} IS NOT NULL", column=column)


def unique(column: str) -> Expect:
    return _expect("ExpectColumnValuesToBeUnique", column=column)


def pair_in_set(column_a: str, column_b: str, pairs) -> Expect:
    return _expect("ExpectColumnPairValuesToBeInSet", column_A=column_a, column_B=column_b,
                   value_pairs_set=tuple(tuple(p) for p in pairs))


def pair_equal(column_a: str, column_b: str) -> Expect:
    return _expect("ExpectColumnPairValuesToBeEqual", column_A=column_a, column_B=column_b)


# --- silver rules ----------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    name: str
    stage: int  # 1 bytes, 2 JSON, 3 format, 4 content (5: the duplicate pseudo-rule)
    check: str | Expect  # Spark SQL predicate (true = pass), or an Expect whose predicate it is
    reason: str  # one readable line
    policy: str = "quarantine"
    table: str = "silver.events"  # the table the rule guards; `expect` is validated on it
    expect: tuple[Expect, ...] = field(default=())  # Great Expectations checks of that table
    view: str | None = None  # validate `expect` on a frame quality.VIEWS computes (default: the table's new rows)

    def __post_init__(self):
        if isinstance(self.check, Expect):  # declared once: the routing predicate and the table check
            object.__setattr__(self, "expect", (self.check, *self.expect))
            object.__setattr__(self, "check", self.check.predicate or "")


def json_type(field_name: str) -> str:
    """The column ``silver.transforms.parse`` adds with the field's JSON type (null: missing)."""
    return f"json_type_{field_name}"


_INTEGER = "('TINYINT', 'SMALLINT', 'INT', 'BIGINT')"
_V1_STRINGS = ("event_id", "server_id", "event_time", "server_type", "country_code", "country_name", "city",
               "status_color", "severity_level")
_SEED_STRINGS = ("event_server_status_color_name_severity_level", "event_datetime", "event_server_type",
                 "event_country_code", "event_country_name", "event_city_name", "event_id")
_SEVERITY_CASE = "CASE status_color " + " ".join(f"WHEN '{c}' THEN '{s}'" for c, s in SEVERITY_BY_STATUS.items()) + " END"
# Silver columns every valid event has (server_id is null for the seed format, which has none).
SILVER_REQUIRED = ("event_key", "event_id", "server_type", "country_code", "city", "status_color", "severity_level",
                   "estimated_resolution_time", "event_time")


def _typed(field_name: str, types: str) -> str:
    """A missing field is the business of required_fields, not of this check."""
    return f"({json_type(field_name)} IS NULL OR {json_type(field_name)} IN {types})"


def _strings_typed(fields: tuple[str, ...]) -> str:
    return " AND ".join(_typed(f, "('STRING')") for f in fields)


RULES: tuple[Rule, ...] = (
    # An oversized payload is judged by its size alone (not scanned: it can be megabytes).
    Rule("valid_utf8", 1, "is_utf8 IS NOT FALSE", "payload is not valid UTF-8"),
    Rule("message_size", 1, f"octet_length(value) <= {MAX_MESSAGE_BYTES}",
         f"payload is larger than {MAX_MESSAGE_BYTES} bytes"),
    # A message in a known format is an object (a field was found in it): only the others need
    # the schema of the whole value.
    Rule("json_object", 2, "v IS NOT NULL AND (fmt IS NOT NULL OR schema_of_variant(v) LIKE 'OBJECT%')",
         "payload is not a JSON object (malformed or truncated)"),
    Rule("known_format", 3, "fmt IS NOT NULL", "neither a v1 nor an original-format message",
         expect=(not_null("source_format"), in_set("source_format", ("v1", "seed")))),
    Rule("required_fields", 4, "missing_fields = ''", "required fields are missing",
         expect=tuple(not_null(c) for c in SILVER_REQUIRED)),
    Rule("field_types", 4,
         f"CASE fmt WHEN 'v1' THEN {_strings_typed(_V1_STRINGS)} AND {_typed('schema_version', _INTEGER)} "
         f"AND {_typed('estimated_resolution_time', _INTEGER)} "
         f"ELSE {_strings_typed(_SEED_STRINGS)} AND {_typed('event_estimated_issue_resolution_time', _INTEGER)} END",
         "a field has the wrong JSON type"),
    Rule("schema_version", 4, f"fmt = 'seed' OR try_variant_get(fields.schema_version, '$', 'int') = {V1_SCHEMA_VERSION}",
         f"v1 message with a schema_version other than {V1_SCHEMA_VERSION}"),
    Rule("event_time_valid", 4, f"event_time IS NOT NULL OR NOT ({json_type('event_time')} <=> 'STRING' "
                               f"OR {json_type('event_datetime')} <=> 'STRING')",
         "event time cannot be parsed"),
    Rule("event_time_not_future", 4,
         f"event_time IS NULL OR event_time <= ingested_at + CASE fmt WHEN 'seed' THEN "
         f"{_interval(SEED_FUTURE_TOLERANCE)} ELSE {_interval(FUTURE_TOLERANCE)} END",
         "event time is in the future",
         expect=(between("event_time", EARLIEST_EVENT_TIME, Now(SEED_FUTURE_TOLERANCE)),)),
    Rule("status_known", 4, in_set("status_color", SEVERITY_BY_STATUS), "unknown status colour"),
    Rule("severity_matches_status", 4,
         f"severity_level IS NULL OR severity_level = coalesce({_SEVERITY_CASE}, severity_level)",
         "severity level does not match the status colour",
         expect=(in_set("severity_level", SEVERITY_BY_STATUS.values()),
                 pair_in_set("status_color", "severity_level", SEVERITY_BY_STATUS.items()))),
    Rule("server_type_known", 4, in_set("server_type", SERVER_TYPES), "unknown server type"),
    Rule("country_code_format", 4, matches("country_code", "^[A-Z]{2}$"), "country code is not two capital letters"),
    Rule("resolution_time_range", 4, between("estimated_resolution_time", 0, MAX_RESOLUTION_MINUTES),
         f"estimated resolution time outside 0..{MAX_RESOLUTION_MINUTES}"),
)

# Not a row predicate: silver keeps one row per event_key; later copies are quarantined
# under this name with the reason below. Its expectation runs on the view "silver.keys":
# the batch's keys with every silver row that shares one of them.
DUPLICATE_RULE = Rule("unique_event", 5, "", "duplicate of an event already in silver",
                      expect=(unique("event_key"),), view="silver.keys")


# --- layer checks -------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """A layer-level expectation: routes nothing, validated by Great Expectations."""
    name: str
    table: str  # the table validated
    expect: tuple[Expect, ...]
    reason: str  # what a failure means
    view: str | None = None  # a frame quality.VIEWS computes from the table (default: its rows)
    policy: str = "check"


CHECKS: tuple[Check, ...] = (
    Check("kafka_coordinates", "bronze.events", (not_null("topic"), not_null("partition"), not_null("offset")),
          "a record has no Kafka coordinates"),
    Check("parse_share", "bronze.events", (in_set("parses", (True,), mostly=PARSE_SHARE),),
          f"fewer than {PARSE_SHARE:.0%} of the records parse (valid UTF-8 JSON objects within the size limit)"),
    Check("offsets_contiguous", "bronze.events", (between("missing_offsets", 0, 0),),
          "offsets are missing within a partition: records lost between Kafka and bronze",
          view="bronze.partitions"),
    Check("no_negative_totals", "gold.status_by_location",
          (between("event_count", 0), between("total_estimated_resolution_time", 0)),
          "a negative count or total in gold.status_by_location"),
    Check("no_negative_totals_by_minute", "gold.status_by_minute",
          (between("event_count", 0), between("total_estimated_resolution_time", 0)),
          "a negative count or total in gold.status_by_minute"),
    Check("gold_matches_silver", "gold.status_by_location", (pair_equal("gold_event_count", "silver_event_count"),),
          "the sum of event_count in gold.status_by_location differs from the number of silver events",
          view="gold.layer_totals"),
    Check("open_incidents_not_green", "gold.incidents",
          (not_null("server_status"), not_in_set("server_status", ("Green",))),
          "an open incident's server is Green, or missing, in gold.server_state",
          view="gold.open_incidents"),
)

RULES_BY_NAME = {r.name: r for r in (*RULES, DUPLICATE_RULE)}


def validate_rules(rules: tuple[Rule, ...] = RULES, checks: tuple[Check, ...] = CHECKS) -> None:
    """Reject a broken declaration at start-up, naming the rule.

    Whether each check compiles against the parsed schema is checked with Spark by
    ``quality.compile_rules`` (the stream's start-up runs both)."""
    seen = {DUPLICATE_RULE.name}
    for r in rules:
        if not isinstance(r, Rule) or not r.name or not r.name.isidentifier():
            raise ValueError(f"rule {getattr(r, 'name', r)!r}: needs a name made of letters, digits and _")
        if r.name in seen:
            raise ValueError(f"rule {r.name}: declared twice")
        seen.add(r.name)
        if r.policy not in POLICIES:
            raise ValueError(f"rule {r.name}: unknown policy {r.policy!r} (one of {', '.join(POLICIES)})")
        if r.stage not in (1, 2, 3, 4) or not isinstance(r.check, str) or not r.check.strip():
            raise ValueError(f"rule {r.name}: needs a stage 1-4 and a check")
        if "'" in r.reason or not r.reason.strip():
            raise ValueError(f"rule {r.name}: needs a one-line reason without quotes")
        _validate_expects(f"rule {r.name}", r.expect)
    for c in checks:
        if c.name in seen:
            raise ValueError(f"check {c.name}: name already used by a rule or a check")
        seen.add(c.name)
        if not c.expect:
            raise ValueError(f"check {c.name}: needs at least one expectation")
        _validate_expects(f"check {c.name}", c.expect)


def _validate_expects(owner: str, expects: tuple[Expect, ...]) -> None:
    labels = set()
    for e in expects:
        if not isinstance(e, Expect) or e.kind not in EXPECTATIONS:
            raise ValueError(f"{owner}: unknown expectation {getattr(e, 'kind', e)!r} (one of {', '.join(EXPECTATIONS)})")
        if not e.columns:
            raise ValueError(f"{owner}: {e.kind} needs a column")
        if e.label in labels:
            raise ValueError(f"{owner}: {e.label} declared twice")
        labels.add(e.label)
        mostly = e.kwargs.get("mostly")
        if mostly is not None and not 0 < mostly <= 1:
            raise ValueError(f"{owner}: mostly must be in (0, 1], got {mostly}")
