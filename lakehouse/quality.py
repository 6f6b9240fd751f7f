"""Data quality with Great Expectations (GX Core 1.x on Spark DataFrames).

Every suite is built from the declarations in ``lakehouse/rules.py``; nothing here restates
a rule:

* **bronze.events**: each silver rule as "no record of the batch fails it" (a boolean column
  ``rule_<name>`` computed from the rule's check, in stage order, exactly as silver judges),
  plus the bronze layer checks: Kafka coordinates present, the share of records that parse,
  and (view ``bronze.partitions``) no offset gap within a partition of a batch.
* **silver.events**: the rules' ``expect`` (not null, in set, between, pair in set, regex)
  on the new silver rows; ``unique_event`` on the view ``silver.keys`` (the batch's event keys
  with every silver row sharing one).
* **gold**: no negative totals, and the cross-layer checks on views computed from
  consistent table versions: ``gold.layer_totals`` (the sum of event_count equals the number
  of silver events, both read between two batches of the query that writes them),
  ``gold.open_incidents`` (each open incident's server is not Green in gold.server_state).

Cheap row checks already run on every micro-batch (silver routing). The GX validations run
off the streaming threads: ``QualityMonitor``, a daemon thread that ``lakehouse stream``
starts, makes one pass every ``LAKEHOUSE_DQ_INTERVAL_SECONDS`` (0: back to back, ``off``:
never). A pass validates the data files bronze and silver gained since the last version it
validated (``storage.new_files``, from the Delta log; the version is the newest in
quality.results, so each file is validated once and a pass after a crash resumes), and gold
when its versions moved. ``lakehouse dq run`` makes one pass by hand. Many new rows are
validated on a sample of ``LAKEHOUSE_DQ_SAMPLE_ROWS`` rows drawn from files drawn at random
(key uniqueness: the sampled keys against the table within the de-duplication horizon;
offset gaps see every row): silver's rules and de-duplication already judge every row,
and Great Expectations' one Spark job per expectation would otherwise cost more than silver.
A view that small (at most ``LOCAL_ROWS``) is validated by GX's pandas engine on a copy. Each
suite runs in two passes (``validate``): every expectation with GX's cheapest result format,
then in full only those that failed (and those with ``mostly``), for their counts and sample
rows; the report's Data Docs run every expectation in full.

Results (suite, table, Delta version, rule, expectation, success, observed value,
unexpected count, sample rows) are appended to the Delta table ``quality.results``, exactly
once per pass and table version (Delta transaction ids), and copied to PostgreSQL ``quality_results``; the
quarantine counts per rule, with recent samples, go to ``quality_quarantine``. An
expectation that cannot be evaluated (a column gone after a schema change) is a failed
result whose reason says why, never a crash.

``lakehouse dq report`` prints pass rates, last failures and quarantine counts per table and
rule, and builds GX Data Docs into a folder that renders offline: the Bootstrap, jQuery,
Vega and Font Awesome files the pages load from CDNs are copied next to them (from the npm
packages ``scripts/setup.sh`` puts in ``dashboard/static/vendor/datadocs``) and every remote
URL in the pages is rewritten to them, or removed.

Policy ``fail`` (``enforce_fail_rules``, called by silver before it writes a batch): a
record failing such a rule stops silver and gold (the query that writes them; bronze goes
on recording) with one message naming the rule, with sample records. Nothing of the batch
was written, so a restart after the fix judges the same batch again from the checkpoint.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import re
import shutil
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from lakehouse import storage
from lakehouse.rules import CHECKS, DUPLICATE_RULE, Check, Expect, Now, Rule, in_set
from lakehouse.settings import REPO_ROOT, ConfigError, Settings, is_local, local_location
from lakehouse.tables import (
    BRONZE_EVENTS,
    GOLD_INCIDENTS,
    GOLD_SERVER_STATE,
    GOLD_STATUS_BY_LOCATION,
    GOLD_STATUS_BY_MINUTE,
    QUALITY_RESULTS,
    SILVER_EVENTS,
    SILVER_QUARANTINE,
)

log = logging.getLogger(__name__)

INTERVAL_ENV = "LAKEHOUSE_DQ_INTERVAL_SECONDS"
DEFAULT_INTERVAL = 60.0
SAMPLE_ENV = "LAKEHOUSE_DQ_SAMPLE_ROWS"
DEFAULT_SAMPLE = 10_000
SAMPLES = 3  # sample failing rows kept per expectation
SAMPLE_TEXT = 200  # characters of a text value kept in a sample
MONITORED = (BRONZE_EVENTS.name, SILVER_EVENTS.name)  # validated on their new rows, pass by pass
RETRIES = 3  # failed passes in a row before the monitor goes on from a table's latest version
# The monitor rests this many times as long as each step of its pass took: the pass shares the
# machine's cores with the pipeline's micro-batches, and at full speed it slowed the refining
# batches under way from ~3 s to ~7 s, the freshness run's slowest (measured).
MONITOR_PACE = 2.0
GOLD_TABLES = (GOLD_STATUS_BY_LOCATION.name, GOLD_STATUS_BY_MINUTE.name, GOLD_INCIDENTS.name, GOLD_SERVER_STATE.name)
VENDOR = REPO_ROOT / "dashboard" / "static" / "vendor" / "datadocs"
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": SAMPLES, "include_unexpected_rows": True}
# A view of at most this many rows (a sampled batch, offset gaps, gold) is validated by GX's
# pandas engine on a copy; a larger one (the report's whole tables) by its Spark engine.
LOCAL_ROWS = 50_000

# view -> (the table it is computed from, what it is)
VIEWS: dict[str, tuple[str, str]] = {
    "bronze.events": (BRONZE_EVENTS.name, "new bronze rows with `parses` and one `rule_<name>` flag per silver rule"),
    "bronze.partitions": (BRONZE_EVENTS.name, "per Kafka partition of the batch: records, first and last offset, "
                                              "`missing_offsets`"),
    "silver.events": (SILVER_EVENTS.name, "new silver rows"),
    "silver.keys": (SILVER_EVENTS.name, "the batch's event keys with every silver row of the de-duplication horizon "
                                        "that shares one"),
    "gold.status_by_location": (GOLD_STATUS_BY_LOCATION.name, "the table at a consistent version"),
    "gold.status_by_minute": (GOLD_STATUS_BY_MINUTE.name, "the table at a consistent version"),
    "gold.layer_totals": (GOLD_STATUS_BY_LOCATION.name, "one row: `gold_event_count` (sum of event_count) and "
                                                        "`silver_event_count` (silver events at the same moment)"),
    "gold.open_incidents": (GOLD_INCIDENTS.name, "open incidents with `server_status`, their server's status "
                                                 "in gold.server_state"),
}
BRONZE_VIEWS = ("bronze.events", "bronze.partitions")
# Views the monitor computes from a sample of a large batch (silver.keys: the sampled rows'
# keys against silver within the de-duplication horizon); offset gaps need every row of the batch.
SAMPLED_VIEWS = ("bronze.events", "silver.events", "silver.keys")
SILVER_VIEWS = ("silver.events", "silver.keys")
GOLD_VIEWS = ("gold.status_by_location", "gold.status_by_minute", "gold.layer_totals", "gold.open_incidents")


def interval_seconds() -> float | None:
    """LAKEHOUSE_DQ_INTERVAL_SECONDS: seconds between passes (default 60; 0: back to back); None when off."""
    raw = (os.environ.get("LAKEHOUSE_DQ_INTERVAL_SECONDS") or "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    if raw.lower() == "off":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{INTERVAL_ENV}={raw!r} is not a number of seconds or 'off'") from None
    if value < 0:
        raise ConfigError(f"{INTERVAL_ENV} must be 0 or more (or 'off'), got {raw}")
    return value


def sample_rows() -> int:
    """LAKEHOUSE_DQ_SAMPLE_ROWS: the most rows of a batch the monitor validates per row view
    (default 10,000; 0: every row)."""
    raw = (os.environ.get(SAMPLE_ENV) or "").strip()
    if not raw:
        return DEFAULT_SAMPLE
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{SAMPLE_ENV}={raw!r} is not a whole number of rows (0: every row)") from None
    if value < 0:
        raise ConfigError(f"{SAMPLE_ENV} must be 0 (every row) or more, got {raw}")
    return value


def sampled(df, rows: int, seed: int) -> tuple:
    """(at most ``rows`` rows of ``df`` drawn at random, or ``df`` itself; the rows ``df`` has,
    when it was sampled: the caller then unpersists the sample)."""
    if not rows:
        return df, None
    total = df.count()
    if total <= rows:
        return df, None
    # kept: the views that use it see the same rows, drawn once
    return df.sample(fraction=min(1.0, 1.1 * rows / total), seed=seed).limit(rows).persist(), total


def monitored_columns(table: str) -> list[str]:
    """What the monitor reads of ``table``'s rows: of bronze, the columns its views read (those
    silver reads; a missing one: the view says so); of silver, every column. Bronze's text
    alone is about as large as its payload (the bronze suite on 1M events, median of 6
    alternated: 6.7 -> 5.6 CPU s)."""
    from lakehouse.silver import transforms as T

    return list(T.SOURCE_COLUMNS) if table == BRONZE_EVENTS.name else list(SILVER_EVENTS.column_names)


def _mark_sampled(rows: list[dict], total: int) -> None:
    """Say in each result's observed value that it counts a sample of ``total`` rows."""
    for row in rows:
        observed = json.loads(row["observed_value"]) if row.get("observed_value") else None
        if isinstance(observed, dict):
            row["observed_value"] = json.dumps({**observed, "sampled_from": total})


def current_rules() -> tuple[Rule, ...]:
    """The silver rules as declared now (read at call time, so a test can swap them)."""
    from lakehouse import rules

    return rules.RULES


# --- policy fail --------------------------------------------------------------------------

class RuleFailure(ConfigError):
    """A record failed a rule whose policy is ``fail``: silver stops before writing the batch."""

    def __init__(self, rule: Rule, count: int, samples: list[dict]):
        self.rule, self.count, self.samples = rule, count, samples
        lines = [f"silver and gold stopped by rule {rule.name} (policy fail): {count} record(s) of the batch failed it "
                 f"({rule.reason}). Nothing of the batch was written. Fix the producer, or the rule in "
                 "lakehouse/rules.py, and start the stream again: the batch is judged again from the checkpoint.",
                 "sample records (topic/partition/offset: payload):"]
        lines += [f"  {s.get('topic')}/{s.get('partition')}/{s.get('offset')}: {s.get('value_text')}" for s in samples]
        super().__init__("\n".join(lines))


_failure_lock = threading.Lock()
_last_failure: RuleFailure | None = None


def take_failure() -> RuleFailure | None:
    """The last fail-policy stop not yet handled (the pipeline asks when the refining query ends)."""
    global _last_failure
    with _failure_lock:
        failure, _last_failure = _last_failure, None
    return failure


def fires(rule: Rule, rules: tuple[Rule, ...] | None = None) -> str:
    """SQL: the record fails ``rule`` as silver judges it. A quarantine or fail rule counts only
    when every such rule of an earlier stage passed (judge keeps the first failing stage); a
    warn rule is judged on every record."""
    rules = current_rules() if rules is None else rules
    failing = f"NOT coalesce(({rule.check}), false)"
    if rule.policy == "warn":
        return failing
    earlier = [q for q in rules if q.stage < rule.stage and q.policy in ("quarantine", "fail")]
    if not earlier:
        return failing
    return "(" + " AND ".join(f"coalesce(({q.check}), false)" for q in earlier) + f") AND {failing}"


def enforce_fail_rules(judged) -> None:
    """Raise RuleFailure if a record of ``judged`` (silver.transforms.judge output) fails a
    ``fail`` rule. One Spark job when such rules exist; nothing at all otherwise."""
    from pyspark.sql import functions as F

    from lakehouse.silver import transforms as T

    rules = current_rules()
    stopping = [r for r in rules if r.policy == "fail"]
    if not stopping:
        return
    counts = judged.agg(*[F.count(F.when(F.expr(fires(r, rules)), 1)).alias(r.name) for r in stopping]).first()
    for r in stopping:
        if counts[r.name]:
            sample = (judged.where(F.expr(fires(r, rules)))
                      .select("topic", "partition", "offset", T.payload_text(SAMPLE_TEXT).alias("value_text"))
                      .orderBy("partition", "offset").limit(SAMPLES).collect())
            failure = RuleFailure(r, counts[r.name], [s.asDict() for s in sample])
            global _last_failure
            with _failure_lock:
                _last_failure = failure
            raise failure


def compile_rules(spark) -> None:
    """Start-up: every rule's check must be valid Spark SQL over the parsed columns; a broken
    one is rejected with its name (``rules.validate_rules`` checks the rest of the declaration)."""
    from pyspark.sql import functions as F

    from lakehouse.silver import transforms as T

    parsed = T.parse(spark.createDataFrame([], BRONZE_EVENTS.ddl))
    rules = current_rules()
    try:
        parsed.select(*[F.expr(r.check) for r in rules])  # one analysis when all is well
        return
    except Exception:  # noqa: BLE001 - find which one
        pass
    for r in rules:
        try:
            parsed.select(F.expr(r.check))
        except Exception as e:  # noqa: BLE001 - AnalysisException, ParseException
            raise ConfigError(f"rule {r.name}: its check is not valid Spark SQL over the parsed columns: "
                              f"{_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines() or [type(e).__name__])[0][:300]


# --- suites -------------------------------------------------------------------------------

Owner = Rule | Check


def bronze_rule_expect(rule: Rule) -> Expect:
    """The bronze side of a silver rule: its ``rule_<name>`` flag is true on every record."""
    return in_set(f"rule_{rule.name}", (True,))


def suite_items(view: str, rules: tuple[Rule, ...] | None = None) -> list[tuple[Owner, Expect]]:
    """(declaration, expectation) pairs validated on ``view``, in declaration order."""
    rules = current_rules() if rules is None else rules
    items: list[tuple[Owner, Expect]] = []
    table = VIEWS[view][0]
    if view == "bronze.events":
        items += [(r, bronze_rule_expect(r)) for r in rules]
    items += [(c, e) for c in CHECKS if c.table == table and (c.view or table) == view for e in c.expect]
    for r in (*rules, DUPLICATE_RULE):
        if r.table == table and (r.view or table) == view:
            items += [(r, e) for e in r.expect]
    return items


def _gx_value(value):
    if isinstance(value, Now):
        return value.resolve()
    if isinstance(value, tuple):
        return [_gx_value(v) for v in value]
    return value


def _values(values, limit: int = 4) -> str:
    values = [str(v) for v in values]
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def describe(owner: Owner, expect: Expect) -> str:
    """One line for Data Docs: the rule, what must hold, and what a failure means."""
    kw = expect.kwargs
    column = kw.get("column")
    bound = {k: (f"now + {v.offset}" if isinstance(v, Now) else v) for k, v in kw.items() if k.endswith("_value")}
    if column and column.startswith("rule_") and expect.kind == "ExpectColumnValuesToBeInSet":
        what = "no record fails this silver rule"
    elif expect.kind == "ExpectColumnValuesToBeInSet" and tuple(kw.get("value_set", ())) == (True,):
        what = f"{column} is true"
    elif expect.kind == "ExpectColumnValuesToBeBetween" and len(bound) == 2 and \
            bound["min_value"] == bound["max_value"]:
        what = f"{column} is {bound['min_value']}"
    else:
        what = {
            "ExpectColumnValuesToNotBeNull": f"{column} is never null",
            "ExpectColumnValuesToBeInSet": f"{column} is one of {_values(kw.get('value_set', ()))}",
            "ExpectColumnValuesToNotBeInSet": f"{column} is never {_values(kw.get('value_set', ()))}",
            "ExpectColumnValuesToBeBetween": f"{column} is " + (
                f"between {bound['min_value']} and {bound['max_value']}" if len(bound) == 2 else
                f"at least {bound['min_value']}" if "min_value" in bound else f"at most {bound.get('max_value')}"),
            "ExpectColumnValuesToMatchRegex": f"{column} matches {kw.get('regex')}",
            "ExpectColumnValuesToBeUnique": f"{column} is unique",
            "ExpectColumnPairValuesToBeInSet": f"({kw.get('column_A')}, {kw.get('column_B')}) is a declared pair",
            "ExpectColumnPairValuesToBeEqual": f"{kw.get('column_A')} equals {kw.get('column_B')}",
        }.get(expect.kind, expect.label)
    share = f" in at least {kw['mostly']:.0%} of the rows" if kw.get("mostly") else ""
    return f"{owner.name}: {what}{share} (otherwise: {owner.reason})"


def gx_expectation(owner: Owner, expect: Expect):
    """The GX Core expectation object for a declared ``Expect``."""
    import great_expectations.expectations as gxe

    kwargs = {k: _gx_value(v) for k, v in expect.args}
    if "value_pairs_set" in kwargs:
        kwargs["value_pairs_set"] = [tuple(p) for p in kwargs["value_pairs_set"]]
    return getattr(gxe, expect.kind)(**kwargs, description=describe(owner, expect),
                                     meta={"rule": owner.name, "expectation": expect.label})


def _context(site_dir: Path | None = None):
    """A fresh ephemeral GX context: nothing accumulates between passes; optionally a Data Docs site."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    # this one sets itself to INFO, and logs a line per ephemeral context
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    for name in list(ctx.list_data_docs_sites()):  # the default site writes into a temporary folder
        ctx.delete_data_docs_site(name)
    if site_dir is not None:
        ctx.add_data_docs_site(site_name="lakehouse", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    ctx.data_sources.add_spark("lakehouse", persist=False)
    ctx.data_sources.add_pandas("lakehouse-local")
    return ctx


def local_copy(frame):
    """A pandas copy of a Spark ``frame`` of at most ``LOCAL_ROWS`` rows, else the frame itself.
    GX's Spark engine runs about one Spark job per expectation, ~0.1-0.3 s each here even on
    a few rows; its pandas engine validates a 10,000-row sample in milliseconds."""
    if _is_pandas(frame):
        return frame
    head = frame.limit(LOCAL_ROWS + 1).toPandas()  # one Spark job: the copy tells the size
    return frame if len(head) > LOCAL_ROWS else head


def _is_pandas(frame) -> bool:
    return not hasattr(frame, "sparkSession")


def _run_suite(ctx, name: str, frame, items: list[tuple[Owner, Expect]], result_format, run_name: str | None) -> dict:
    """GX results of ``items`` on ``frame``, by expectation label."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    suite = ctx.suites.add(gx.ExpectationSuite(name=name, expectations=[gx_expectation(o, e) for o, e in items]))
    source = ctx.data_sources.get("lakehouse-local" if _is_pandas(frame) else "lakehouse")
    batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("batch")
    definition = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    run_id = RunIdentifier(run_name=re.sub(r"[^\w.@-]+", "_", run_name or "lakehouse-dq"), run_time=dt.datetime.now(dt.UTC))
    outcome = definition.run(batch_parameters={"dataframe": frame}, result_format=result_format, run_id=run_id)
    return {r.expectation_config.meta.get("expectation"): r for r in outcome.results}


def validate(ctx, view: str, frame, items: list[tuple[Owner, Expect]], *, info: dict,
             unavailable: dict[str, str] | None = None, run_name: str | None = None,
             in_two_passes: bool = True) -> list[dict]:
    """Validate ``frame`` against the suite of ``items`` in ``ctx``; one result row per item.

    In two passes by default: every expectation with GX's ``BOOLEAN_ONLY`` result format (about
    a third of the cost of the full one, measured), then again with the full format (counts, sample
    rows) those that failed, and those with ``mostly`` (whose observed share is the point). An
    expectation that held in the first pass had no unexpected row. One full pass otherwise (the
    report's Data Docs show every result in full).

    ``unavailable`` maps an expectation label to why it could not even be built; such items,
    and expectations GX cannot evaluate (a missing column), are failed results with the reason."""
    unavailable = unavailable or {}
    if frame is not None:
        frame = local_copy(frame)
    runnable = [(o, e) for o, e in items if e.label not in unavailable]
    by_label: dict[str, object] = {}
    held: set[str] = set()
    elements = None
    if runnable and frame is not None and in_two_passes:
        first = _run_suite(ctx, f"{view}.pass", frame, runnable, {"result_format": "BOOLEAN_ONLY"}, run_name)
        held = {e.label for _, e in runnable if "mostly" not in dict(e.args) and first.get(e.label) is not None
                and first[e.label].success and not _exception_message(first[e.label].exception_info)}
        runnable = [(o, e) for o, e in runnable if e.label not in held]
        elements = (len(frame) if _is_pandas(frame) else frame.count()) if held else None
    if runnable and frame is not None:
        by_label = _run_suite(ctx, view, frame, runnable, RESULT_FORMAT, run_name)
    rows = []
    validated_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for owner, expect in items:
        row = {**info, "suite": view, "rule": owner.name, "policy": owner.policy, "expectation": expect.label,
               "validated_at": validated_at}
        result = by_label.get(expect.label)
        if expect.label in held:
            row.update(success=True, element_count=elements, unexpected_count=0, unexpected_percent=0.0,
                       observed_value=json.dumps({"unexpected_count": 0, "element_count": elements}),
                       sample_rows=None, reason=None)
        elif result is None:
            why = unavailable.get(expect.label) or "the view could not be computed"
            row.update(success=False, reason=f"cannot be evaluated: {why}")
        else:
            row.update(_result_fields(owner, result))
        rows.append(row)
    return rows


def _exception_message(info) -> str | None:
    if not info:
        return None
    if isinstance(info, dict) and "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    if isinstance(info, dict):
        messages = [_exception_message(v) for v in info.values() if isinstance(v, dict)]
        messages = [m for m in messages if m]
        return "; ".join(dict.fromkeys(messages)) or None
    return None


def _jsonable(value):
    if isinstance(value, str):
        return value[:SAMPLE_TEXT]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)[:SAMPLE_TEXT].decode("utf-8", "replace")
    return str(value)[:SAMPLE_TEXT]


def _result_fields(owner: Owner, result) -> dict:
    res = dict(result.result or {})
    error = _exception_message(result.exception_info)
    if error:
        return {"success": False, "reason": f"cannot be evaluated: {error[:500]}"}
    samples = res.get("unexpected_rows")
    if hasattr(samples, "to_dict"):  # GX's pandas engine gives a DataFrame
        head = samples.head(SAMPLES)
        samples = head.astype(object).where(head.notna(), None).to_dict("records")
    if samples:
        samples = [{k: v for k, v in row.items() if not k.startswith("rule_")} for row in samples[:SAMPLES]]
    elif res.get("partial_unexpected_list"):
        samples = [{"value": v} for v in res["partial_unexpected_list"][:SAMPLES]]
    observed = res.get("observed_value")
    if observed is None and "unexpected_count" in res:
        observed = {"unexpected_count": res.get("unexpected_count"), "element_count": res.get("element_count")}
    return {
        "success": bool(result.success),
        "observed_value": json.dumps(_jsonable(observed)) if observed is not None else None,
        "element_count": res.get("element_count"),
        "unexpected_count": res.get("unexpected_count"),
        "unexpected_percent": res.get("unexpected_percent"),
        "sample_rows": json.dumps(_jsonable(samples)) if samples else None,
        "reason": None if result.success else owner.reason,
    }


# --- views --------------------------------------------------------------------------------

def bronze_view(batch, settings: Settings, rules: tuple[Rule, ...] | None = None):
    """(frame, unavailable): bronze rows with `parses` and a `rule_<name>` flag per silver rule.
    A rule whose check cannot be computed on these rows is left out, with the reason."""
    from pyspark.sql import functions as F

    from lakehouse.silver import transforms as T

    rules = current_rules() if rules is None else rules
    parsed = T.parse(batch, seed_timezone=settings.seed_timezone, late_after=settings.late_after)
    base = [F.col(c) for c in ("topic", "partition", "offset")]
    base.append(T.payload_text(SAMPLE_TEXT).alias("value_text"))
    early = [r for r in rules if r.stage <= 2]
    parses = " AND ".join(f"coalesce(({r.check}), false)" for r in early) or "true"
    flags = [("parses", parses, "ExpectColumnValuesToBeInSet(parses)")] + \
        [(f"rule_{r.name}", f"NOT ({fires(r, rules)})", bronze_rule_expect(r).label) for r in rules]
    try:  # one analysis when every check can be computed, the usual case
        return parsed.select(*base, *[F.expr(sql).alias(name) for name, sql, _ in flags]), {}
    except Exception:  # noqa: BLE001 - find the checks that cannot, one by one
        pass
    columns, unavailable = [], {}
    for name, sql, label in flags:
        try:
            parsed.select(F.expr(sql))
            columns.append(F.expr(sql).alias(name))
        except Exception as e:  # noqa: BLE001 - a column the check names is gone
            unavailable[label] = _first_line(e)
    return parsed.select(*base, *columns), unavailable


def partitions_of(coords):
    """``partitions_view`` computed by Arrow (as pandas) from an Arrow table of the batch's
    ``topic``, ``partition`` and ``offset``: the monitor's offset gaps over local files."""
    import pyarrow.compute as pc

    every = pc.CountOptions(mode="all")
    grouped = coords.group_by(["topic", "partition"]).aggregate(
        [("offset", "count", every), ("offset", "min"), ("offset", "max")]).to_pandas()
    grouped = grouped.rename(columns={"offset_count": "records", "offset_min": "first_offset",
                                      "offset_max": "last_offset"})
    grouped["missing_offsets"] = grouped["last_offset"] - grouped["first_offset"] + 1 - grouped["records"]
    return grouped[["topic", "partition", "records", "first_offset", "last_offset", "missing_offsets"]]


def partitions_view(batch):
    from pyspark.sql import functions as F

    return (batch.groupBy("topic", "partition")
            .agg(F.count(F.lit(1)).alias("records"), F.min("offset").alias("first_offset"),
                 F.max("offset").alias("last_offset"))
            .withColumn("missing_offsets", F.col("last_offset") - F.col("first_offset") + 1 - F.col("records")))


def keys_view(silver_table, batch):
    """The batch's event keys with every silver row sharing one: unique when nothing slipped through."""
    return (silver_table.join(batch.select("event_key").distinct(), "event_key", "left_semi")
            .select("event_key", "partition", "offset", "ingested_at"))


def view_frame(spark, settings: Settings, view: str, df) -> tuple:
    """(frame, unavailable) of a bronze or silver ``view`` for a batch ``df`` of its table's rows.
    The keys are unique within the de-duplication horizon: what silver promises."""
    from pyspark.sql import functions as F

    if view == "bronze.events":
        return bronze_view(df, settings)
    if view == "bronze.partitions":
        return partitions_view(df), {}
    if view == "silver.events":
        return df, {}
    if view == "silver.keys":
        silver = storage.read(spark, settings, SILVER_EVENTS.name)
        return keys_view(silver.where(F.col("ingested_at") >= F.lit(settings.dedup_since())), df), {}
    raise ValueError(f"no batch view {view!r}")


def gold_views(spark, settings: Settings, snapshot: dict[str, int]) -> dict:
    """The gold frames at the versions of ``snapshot`` (``gold_snapshot``)."""
    from pyspark.sql import functions as F

    def small(name: str, equals: tuple[str, object] | None = None):  # small by their grain: see storage.read_small
        return storage.read_small(spark, settings, name, equals, version=snapshot[name])

    sbl = small(GOLD_STATUS_BY_LOCATION.name)
    consumed = snapshot[SILVER_EVENTS.name]
    silver_count = storage.read(spark, settings, SILVER_EVENTS.name, consumed).count() if consumed >= 0 else 0
    totals = (sbl.agg(F.coalesce(F.sum("event_count"), F.lit(0)).cast("bigint").alias("gold_event_count"))
              .withColumn("silver_event_count", F.lit(silver_count).cast("bigint")))
    state = small(GOLD_SERVER_STATE.name)
    open_incidents = (small(GOLD_INCIDENTS.name, ("is_open", True)).select("incident_id", "server_id", "started_at")
                      .join(state.select("server_id", F.col("status_color").alias("server_status")), "server_id", "left"))
    return {"gold.status_by_location": sbl,
            "gold.status_by_minute": storage.read(spark, settings, GOLD_STATUS_BY_MINUTE.name,
                                                  snapshot[GOLD_STATUS_BY_MINUTE.name]),
            "gold.layer_totals": totals, "gold.open_incidents": open_incidents}


def validated_version(spark, settings: Settings, table: str, table_id: str) -> int | None:
    """The last version of ``table`` (whose Delta id is ``table_id``: a table created again
    starts over) the monitor validated, as quality.results says; None before its first pass."""
    from pyspark.sql import functions as F

    first = (BRONZE_VIEWS if table == BRONZE_EVENTS.name else SILVER_VIEWS)[0]
    return (storage.read(spark, settings, QUALITY_RESULTS.name)
            .where((F.col("table_name") == table) & F.col("validation_id").startswith(f"{first}/{table_id}/"))
            .agg(F.max("delta_version")).first()[0])


def _last_file(folder: Path) -> tuple[int, str] | None:
    numbered = [p for p in folder.glob("*") if p.name.isdigit()] if folder.exists() else []
    if not numbered:
        return None
    last = max(numbered, key=lambda p: int(p.name))
    return int(last.name), last.read_text()


def _planned_and_committed(settings: Settings) -> tuple[int | None, bool]:
    """(the refining query's last planned batch, whether it is committed): silver and gold
    agree between two of its batches, since each batch writes both."""
    from lakehouse.gold import stream as refine  # the query that writes silver and gold

    checkpoint = Path(settings.checkpoint_path(refine.QUERY))
    offsets, commits = _last_file(checkpoint / "offsets"), _last_file(checkpoint / "commits")
    if offsets is None:  # never ran, or as a replay left it
        return None, True
    return offsets[0], commits is not None and commits[0] == offsets[0]


def gold_snapshot(spark, settings: Settings, attempts: int = 5) -> dict[str, int] | None:
    """Versions at which gold and silver agree: silver and the gold tables as the last
    committed batch of the refining query left them. None while a batch is in flight."""
    for _ in range(attempts):
        before, idle = _planned_and_committed(settings)
        if idle:
            versions = {name: storage.version(spark, settings, name) for name in (SILVER_EVENTS.name, *GOLD_TABLES)}
            if _planned_and_committed(settings) == (before, True):
                return versions
        time.sleep(0.5)
    return None


# --- results ------------------------------------------------------------------------------

def results_frame(spark, rows: list[dict]):
    cols = QUALITY_RESULTS.column_names
    return spark.createDataFrame([tuple(r.get(c) for c in cols) for r in rows], QUALITY_RESULTS.ddl)


def write_results(spark, settings: Settings, rows: list[dict], writer: str | None = None,
                  batch_id: int | None = None) -> None:
    """Append to quality.results; with (writer, batch_id), exactly once per batch."""
    if not rows:
        return
    df = results_frame(spark, rows)
    if writer is not None:
        storage.append_once(df, settings, QUALITY_RESULTS.name, writer, batch_id)
    else:
        df.write.format("delta").mode("append").save(settings.table_path(QUALITY_RESULTS.name))


def pg_write_results(conn, rows: list[dict]) -> None:
    from psycopg2.extras import execute_values

    if not rows:
        return
    cols = QUALITY_RESULTS.column_names
    with conn.cursor() as cur:
        execute_values(cur, f"INSERT INTO quality_results ({', '.join(cols)}) VALUES %s "
                            "ON CONFLICT (validation_id, rule, expectation) DO NOTHING",
                       [tuple(_pg_value(r.get(c)) for c in cols) for r in rows], page_size=500)
    conn.commit()


def _pg_value(v):
    if isinstance(v, dt.datetime) and v.tzinfo is None:
        return v.replace(tzinfo=dt.UTC)
    return v


def quarantine_counts(spark, settings: Settings) -> list[dict]:
    """Per rule: records quarantined, the last time, and a few recent samples (from silver.quarantine)."""
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    rows = (storage.read(spark, settings, SILVER_QUARANTINE.name)
            .select(F.explode("failed_rules").alias("rule"), "topic", "partition", "offset", "reason",
                    F.substring("value_text", 1, SAMPLE_TEXT).alias("value_text"), "quarantined_at"))
    latest = Window.partitionBy("rule").orderBy(F.desc("quarantined_at"), F.desc("partition"), F.desc("offset"))
    ranked = rows.withColumn("_n", F.row_number().over(latest)).withColumn("_count", F.count(F.lit(1)).over(
        Window.partitionBy("rule"))).where(f"_n <= {SAMPLES}").collect()
    out: dict[str, dict] = {}
    for r in ranked:
        entry = out.setdefault(r["rule"], {"rule": r["rule"], "quarantined": r["_count"],
                                           "last_quarantined_at": r["quarantined_at"], "samples": []})
        entry["samples"].append(_jsonable({k: r[k] for k in ("topic", "partition", "offset", "reason", "value_text")}))
    return sorted(out.values(), key=lambda e: (-e["quarantined"], e["rule"]))


def pg_write_quarantine(conn, counts: list[dict]) -> None:
    from psycopg2.extras import execute_values

    with conn.cursor() as cur:
        cur.execute("DELETE FROM quality_quarantine")
        if counts:
            execute_values(cur, "INSERT INTO quality_quarantine (rule, quarantined, last_quarantined_at, samples, "
                                "updated_at) VALUES %s",
                           [(c["rule"], c["quarantined"], _pg_value(c["last_quarantined_at"]), json.dumps(c["samples"]),
                             dt.datetime.now(dt.UTC)) for c in counts])
    conn.commit()


# --- one pass -----------------------------------------------------------------------------

def _snapshot_name(snapshot: dict[str, int]) -> str:
    return "-".join(f"{k.split('.')[-1]}@{v}" for k, v in sorted(snapshot.items()))


class QualityRunner:
    """One data-quality pass at a time: new bronze and silver rows, gold if it moved, the
    quarantine counts. Results to quality.results and PostgreSQL (kept and retried while
    PostgreSQL is away)."""

    def __init__(self, spark, settings: Settings, *, postgres: bool = True, pace: float = 0.0):
        self.spark, self.settings, self.postgres, self.pace = spark, settings, postgres, pace
        self.conn = None
        self.pending: list[dict] = []
        self.pending_quarantine: list[dict] | None = None
        self.last_gold: tuple | None = None
        self.last_quarantine_version: int | None = None
        self.failures: dict[str, int] = {}  # consecutive failed validations of a table's new rows
        self.progress: dict[str, tuple[str, int | None]] = {}  # table -> (its Delta id, last version validated)
        self.sample = sample_rows()
        self.stopping = threading.Event()
        for old in ("dq_bronze", "dq_silver"):  # the monitor's streams, before it read the Delta log
            location = settings.checkpoint_path(old)
            if is_local(location):
                shutil.rmtree(local_location(location), ignore_errors=True)

    # PostgreSQL ---------------------------------------------------------------------------
    def _flush(self) -> None:
        if not self.postgres or (not self.pending and self.pending_quarantine is None):
            return
        from serving import sync

        try:
            if self.conn is None:
                self.conn = sync.connect(self.settings)
            pg_write_results(self.conn, self.pending)
            self.pending.clear()
            if self.pending_quarantine is not None:
                pg_write_quarantine(self.conn, self.pending_quarantine)
                self.pending_quarantine = None
        except Exception as e:  # noqa: BLE001 - PostgreSQL away: keep the rows, try on the next pass
            log.warning("data-quality results not copied to PostgreSQL yet (%d kept): %s", len(self.pending),
                        _first_line(e))
            self.pending[:] = self.pending[-20000:]
            self.close()

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass
            self.conn = None

    # the pass -----------------------------------------------------------------------------
    def _rest(self, started: float) -> None:
        """With ``pace``, wait ``pace`` times as long as the step begun at ``started`` (monotonic) took."""
        if self.pace:
            self.stopping.wait((time.monotonic() - started) * self.pace)

    def run_once(self) -> dict:
        """Validate what is new; returns the number of result rows per layer."""
        done = {"bronze": 0, "silver": 0, "gold": 0}
        for table in MONITORED:
            if self.stopping.is_set():
                return done
            done[table.split(".")[0]] = self._new_rows(table)
        if not self.stopping.is_set():
            done["gold"] = self._gold()
        if not self.stopping.is_set():
            self._quarantine()
        self._flush()
        return done

    def _new_rows(self, table: str) -> int:
        """Validate the rows ``table`` gained since the last validated version (at first, all of it)."""
        upto = None
        try:
            upto = storage.version(self.spark, self.settings, table)
            table_id = storage.table_id(self.spark, self.settings, table)
            after = self._progress(table, table_id)
            if after is not None and after >= upto:
                return 0
            files = storage.new_files(self.spark, self.settings, table, after, upto)
            if files is None:
                log.error("data-quality validation of %s: commits after version %s are gone from its log; it goes "
                          "on from version %d: rows in between are not validated", table, after, upto)
                files = []
            rows = self.validate_files(table, files, info={"table_name": table, "batch_id": None,
                                                           "delta_version": upto}, key=f"{table_id}/{upto}")
            write_results(self.spark, self.settings, rows, f"dq/{table_id}", upto)
            self.pending += rows
            self.progress[table] = (table_id, upto)
            self.failures[table] = 0
            return len(rows)
        except Exception as e:  # noqa: BLE001 - logged; the pass goes on, the rows are tried again next time
            if self.stopping.is_set():
                return 0
            self.failures[table] = self.failures.get(table, 0) + 1
            if self.failures[table] < RETRIES or upto is None or table not in self.progress:
                log.warning("data-quality validation of %s failed, retried on the next pass: %s", table,
                            _first_line(e))
            else:  # e.g. files a VACUUM removed
                log.error("data-quality validation of %s failed %d times (%s); it goes on from version %d: rows in "
                          "between are not validated", table, self.failures[table], _first_line(e), upto)
                self.progress[table] = (self.progress[table][0], upto)
                self.failures[table] = 0
            return 0

    def _progress(self, table: str, table_id: str) -> int | None:
        """The last version of the table validated (None: none yet), from quality.results at first."""
        known = self.progress.get(table)
        if known is None or known[0] != table_id:
            known = (table_id, validated_version(self.spark, self.settings, table, table_id))
            self.progress[table] = known
        return known[1]

    def validate_files(self, table: str, files: list[tuple[str, int | None]], *, info: dict, key: str) -> list[dict]:
        """Every suite of ``table`` on the rows of its data ``files`` ((URI, records), as
        ``storage.new_files`` lists them).

        With ``sample`` and more rows than that, the sampled views see that many rows, drawn at
        random from files drawn at random until they hold that many (the same ones when the files
        are validated again), as SQL's ``TABLESAMPLE SYSTEM``: a Spark row sample decodes every
        row first (7.6 CPU s per million new events for the pass, measured). Offset gaps see
        every row, from three columns of the files. On a local disk the files are read by Arrow
        (the sample handed to Spark, which judges it; the offsets counted by Arrow) and the key
        check looks the sampled keys up in silver's in-memory keys (``storage.key_rows``), as
        silver's de-duplication does; elsewhere Spark reads."""
        if not files:
            return []
        local = is_local(self.settings.table_path(table))
        uris = [uri for uri, _ in files]
        counts = [n for _, n in files]
        columns = monitored_columns(table)
        rng = random.Random(zlib.crc32(key.encode()))
        chosen, total = uris, None
        if self.sample and None not in counts and sum(counts) > self.sample:
            chosen, held, total = [], 0, sum(counts)
            for i in rng.sample(range(len(files)), len(files)):
                chosen.append(uris[i])
                held += counts[i]
                if held >= self.sample:
                    break
        if local:
            import pyarrow as pa

            pool = storage.read_arrow(chosen, columns)
            if total is not None and pool.num_rows > self.sample:
                pool = pool.take(pa.array(sorted(rng.sample(range(pool.num_rows), self.sample))))
            some, pinned = self.spark.createDataFrame(pool), False
        else:
            pool = storage.read_files(self.spark, chosen)
            pool = pool.select(*[c for c in columns if c in pool.columns])
            some, drawn_from = sampled(pool, self.sample if total is not None else 0, rng.getrandbits(31))
            pinned = drawn_from is not None

        def frame(view: str):
            if view == "bronze.partitions":
                if local:
                    return partitions_of(storage.read_arrow(uris, ["topic", "partition", "offset"])), {}
                return partitions_view(storage.read_files(self.spark, uris)), {}
            if view == "silver.keys" and local:
                return self._local_keys(some), {}
            return view_frame(self.spark, self.settings, view, some)

        try:
            return self._validate(table, frame, info=info, key=key, total=total)
        finally:
            if pinned:
                some.unpersist()

    def _local_keys(self, batch):
        """The view silver.keys from silver's in-memory keys (``storage.key_rows``)."""
        keys = batch.select("event_key").toArrow().column(0)
        rows = storage.key_rows(self.settings, SILVER_EVENTS.name, keys, column="event_key", time_column="ingested_at",
                                since=self.settings.dedup_since())
        return rows.to_pandas()

    def validate_batch(self, spark, table: str, df, *, info: dict, key: str, ctx=None,
                       escape: bool = False, run_name: str | None = None, sample: int = 0) -> list[dict]:
        """Every suite of ``table`` on a batch of its rows (the whole table, for the report; a
        test's rows). With ``sample``, the ``SAMPLED_VIEWS`` see at most that many of the
        batch's rows, drawn at random (the same ones when the batch is validated again)."""
        some, total = sampled(df, sample, zlib.crc32(key.encode()))
        try:
            return self._validate(table, lambda view: view_frame(spark, self.settings, view,
                                                                 some if view in SAMPLED_VIEWS else df),
                                  info=info, key=key, ctx=ctx, escape=escape, run_name=run_name, total=total)
        finally:
            if total is not None:
                some.unpersist()

    def _validate(self, table: str, frame_of, *, info: dict, key: str, ctx=None, escape: bool = False,
                  run_name: str | None = None, total: int | None = None) -> list[dict]:
        """The suites of ``table``'s views, each on ``frame_of(view)`` -> (frame, unavailable).
        ``total``: the rows of the batch, when the ``SAMPLED_VIEWS`` see a sample of them (each
        of their results' observed value then says ``sampled_from``). Great Expectations runs
        about one Spark job per expectation, so a pass over every row would cost more than
        silver itself (measured), while silver's rules already judge every row."""
        ctx = ctx or _context()
        rows: list[dict] = []
        for view in (BRONZE_VIEWS if table == BRONZE_EVENTS.name else SILVER_VIEWS):
            started = time.monotonic()
            items = suite_items(view)
            try:
                frame, unavailable = frame_of(view)
                if not _is_pandas(frame):
                    frame = (html_escaped(frame) if escape else frame).persist()
            except Exception as e:  # noqa: BLE001 - the view itself cannot be computed (schema change)
                frame, unavailable = None, {e2.label: _first_line(e) for _, e2 in items}
            try:
                done = validate(ctx, view, frame, items, info={**info, "validation_id": f"{view}/{key}"},
                                unavailable=unavailable, run_name=run_name, in_two_passes=not escape)
            finally:
                if frame is not None and not _is_pandas(frame):
                    frame.unpersist()
            if total is not None and view in SAMPLED_VIEWS:
                _mark_sampled(done, total)
            rows += done
            self._rest(started)
        return rows

    def _gold(self) -> int:
        try:
            snapshot = gold_snapshot(self.spark, self.settings)
        except Exception as e:  # noqa: BLE001
            log.warning("gold versions unavailable for data-quality checks: %s", _first_line(e))
            return 0
        if snapshot is None:
            return 0
        key = tuple(sorted(snapshot.items()))
        if key == self.last_gold:
            return 0
        if self.last_gold is None and self._validated(f"{GOLD_VIEWS[0]}/{_snapshot_name(snapshot)}"):
            self.last_gold = key  # validated before a restart
            return 0
        rows = self.validate_gold(snapshot)
        table_id = storage.table_id(self.spark, self.settings, GOLD_STATUS_BY_LOCATION.name)
        write_results(self.spark, self.settings, rows, f"gold/{table_id}", sum(snapshot.values()) + 1)
        self.pending += rows
        self.last_gold = key
        return len(rows)

    def _validated(self, validation_id: str) -> bool:
        from pyspark.sql import functions as F

        results = storage.read(self.spark, self.settings, QUALITY_RESULTS.name)
        return results.where(F.col("validation_id") == validation_id).limit(1).count() > 0

    def validate_gold(self, snapshot: dict[str, int], ctx=None, *, escape: bool = False,
                      run_name: str | None = None) -> list[dict]:
        ctx = ctx or _context()
        name = _snapshot_name(snapshot)
        rows, error = [], "the view could not be computed"
        try:
            frames = gold_views(self.spark, self.settings, snapshot)
        except Exception as e:  # noqa: BLE001 - a table or column gone: every gold expectation fails, with why
            frames, error = {}, _first_line(e)
        for view in GOLD_VIEWS:
            started = time.monotonic()
            items = suite_items(view)
            table = VIEWS[view][0]
            frame = frames.get(view)
            unavailable = {} if frame is not None else {e.label: error for _, e in items}
            info = {"validation_id": f"{view}/{name}", "table_name": table, "batch_id": None,
                    "delta_version": snapshot.get(table)}
            if frame is not None:
                frame = (html_escaped(frame) if escape else frame).persist()
            try:
                rows += validate(ctx, view, frame, items, info=info, unavailable=unavailable, run_name=run_name,
                                 in_two_passes=not escape)
            finally:
                if frame is not None:
                    frame.unpersist()
            self._rest(started)
        return rows

    def _quarantine(self) -> None:
        try:
            version = storage.version(self.spark, self.settings, SILVER_QUARANTINE.name)
            if version == self.last_quarantine_version:
                return
            started = time.monotonic()
            self.pending_quarantine = quarantine_counts(self.spark, self.settings)
            self.last_quarantine_version = version
            self._rest(started)
        except Exception as e:  # noqa: BLE001
            log.warning("quarantine counts unavailable: %s", _first_line(e))


class QualityMonitor(threading.Thread):
    """`lakehouse stream`'s data-quality thread: a pass every LAKEHOUSE_DQ_INTERVAL_SECONDS."""

    def __init__(self, spark, settings: Settings, interval: float):
        super().__init__(name="data-quality", daemon=True)
        self.runner = QualityRunner(spark, settings, pace=MONITOR_PACE)
        self.interval, self.settings = interval, settings

    def run(self) -> None:
        wait = max(self.interval, 1.0)
        while not self.runner.stopping.wait(wait):
            started = time.monotonic()
            try:
                done = self.runner.run_once()
                if any(done.values()):
                    log.info("data quality validated", extra={"fields": {
                        **done, "duration_ms": int((time.monotonic() - started) * 1000)}})
            except Exception as e:  # noqa: BLE001 - never let the thread die
                log.warning("data-quality pass failed: %s", _first_line(e))
            wait = max(self.interval, self.settings.trigger_seconds, 1.0) if self.interval else \
                max(self.settings.trigger_seconds, 1.0)

    def stop(self) -> None:
        self.runner.stopping.set()  # the pass ends after its current step
        self.join(timeout=120)
        self.runner.close()


def start_monitor(spark, settings: Settings) -> QualityMonitor | None:
    """Start the data-quality thread unless LAKEHOUSE_DQ_INTERVAL_SECONDS=off."""
    interval = interval_seconds()
    if interval is None:
        return None
    monitor = QualityMonitor(spark, settings, interval)
    monitor.start()
    return monitor


def record_stop(spark, settings: Settings, failure: RuleFailure) -> None:
    """A fail-policy stop, kept as a failed result of the rule (quality.results and PostgreSQL)."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    row = {"validation_id": f"silver.stop/{now.isoformat()}", "validated_at": now, "suite": "silver.stop",
           "table_name": SILVER_EVENTS.name, "delta_version": None, "batch_id": None, "rule": failure.rule.name,
           "policy": failure.rule.policy, "expectation": "policy fail: silver stopped", "success": False,
           "observed_value": json.dumps({"unexpected_count": failure.count}), "element_count": None,
           "unexpected_count": failure.count, "unexpected_percent": None,
           "sample_rows": json.dumps(_jsonable(failure.samples)), "reason": failure.rule.reason}
    try:
        write_results(spark, settings, [row])
        runner = QualityRunner(spark, settings)
        runner.pending.append(row)
        runner._flush()
        runner.close()
    except Exception as e:  # noqa: BLE001
        log.warning("could not record the stop in quality.results: %s", _first_line(e))


# --- the report ---------------------------------------------------------------------------

# CDN URL (as GX Data Docs write it) -> file under dashboard/static/vendor/datadocs/ (scripts/setup.sh)
CDN_ASSETS = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/bootstrap.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table/bootstrap-table-filter-control.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker/bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "bootstrap-dark/bootstrap-prefers-dark.css",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega/vega-embed.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome/css/all.min.css",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper/popper.min.js",
}
GX_IMAGES = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
REPORT_RUN = "lakehouse-dq-report"  # the run name of the report's validations in Data Docs
_ATTR_URL = re.compile(r'\s(src|href)\s*=\s*(["\'])(https?://[^"\']*)\2', re.I)
_CSS_URL = re.compile(r"url\(\s*(['\"]?)(https?://[^)'\"]*)\1\s*\)", re.I)
_SRI = re.compile(r'\s(?:integrity|crossorigin)\s*=\s*(["\'])[^"\']*\1', re.I)
_NEWSLETTER = re.compile(r"<p>\s*Stay current on everything GX.*?</p>", re.I | re.S)
# GX writes some links to the site's static folder with a depth that ignores the dots of the
# suite name (favicon.ico on validation pages): every such link is re-pointed from the page.
_STATIC_REF = re.compile(r'(\s(?:src|href)\s*=\s*["\'])(?:\./|\.\./)*static/', re.I)


def _local(url: str, prefix: str, site: Path) -> str | None:
    """The local file (relative, from a page ``prefix`` deep) standing in for ``url``, or None."""
    bare = url.split("?", 1)[0].split("#", 1)[0]
    if bare in CDN_ASSETS:
        return f"{prefix}static/vendor/{CDN_ASSETS[bare]}"
    if bare.startswith(GX_IMAGES):
        name = bare[len(GX_IMAGES):]
        if not (site / "static" / "images" / name).exists():
            name = "logo-long.png"
        return f"{prefix}static/images/{name}"
    return None


def make_offline(site: Path, vendor: Path = VENDOR) -> list[str]:
    """Copy the CDN assets into the site and point every page at them; links to other sites are
    dropped (their text stays). Returns the remote URLs still referenced by src/href (none)."""
    if not (vendor / "bootstrap" / "bootstrap.min.css").exists():
        raise ConfigError(f"the Data Docs assets are missing from {vendor}: run `make setup` (npm ci, then "
                          "scripts/setup.sh copies them)")
    shutil.copytree(vendor, site / "static" / "vendor", dirs_exist_ok=True)
    left: list[str] = []
    for page in sorted([*site.rglob("*.html"), *site.glob("static/styles/*.css")]):
        depth = len(page.relative_to(site).parts) - 1
        prefix = "../" * depth
        text = page.read_text(encoding="utf-8")

        def attr(m: re.Match, prefix: str = prefix) -> str:
            local = _local(m.group(3), prefix, site)
            return f" {m.group(1)}={m.group(2)}{local}{m.group(2)}" if local else ""  # a link elsewhere: dropped

        def css(m: re.Match, prefix: str = prefix, page: Path = page) -> str:
            local = _local(m.group(2), prefix if page.suffix == ".html" else "../../", site)
            return f"url('{local}')" if local else "none"

        text = _NEWSLETTER.sub("", _SRI.sub("", text))
        text = _CSS_URL.sub(css, _ATTR_URL.sub(attr, text))
        if page.suffix == ".html":
            text = _STATIC_REF.sub(lambda m, prefix=prefix: f"{m.group(1)}{prefix}static/", text)
        page.write_text(text, encoding="utf-8")
        left += [m.group(3) for m in _ATTR_URL.finditer(text)]
    return left


def html_escaped(frame):
    """The frame with its text columns HTML-escaped. GX Data Docs write unexpected values into
    the pages as they are (their templates do not escape): a record could otherwise carry a
    script into the report. Escaping is one-to-one and leaves the declared value sets alone."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    columns = []
    for f in frame.schema.fields:
        c = F.col(f"`{f.name}`")
        if isinstance(f.dataType, StringType):
            for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("'", "&#39;")):
                c = F.regexp_replace(c, char, entity)
        columns.append(c.alias(f.name))
    return frame.select(*columns)


def build_docs(spark, settings: Settings, out: Path) -> Path:
    """GX Data Docs of every suite, validated on the tables as they are now, rendered offline."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ctx = _context(site_dir=out)
    runner = QualityRunner(spark, settings, postgres=False)
    for table in (BRONZE_EVENTS.name, SILVER_EVENTS.name):
        runner.validate_batch(spark, table, storage.read(spark, settings, table), info={}, key="report", ctx=ctx, escape=True,
                              run_name=REPORT_RUN)
    snapshot = gold_snapshot(spark, settings, attempts=3) or \
        {SILVER_EVENTS.name: storage.version(spark, settings, SILVER_EVENTS.name),
         **{t: storage.version(spark, settings, t) for t in GOLD_TABLES}}
    runner.validate_gold(snapshot, ctx=ctx, escape=True, run_name=REPORT_RUN)
    ctx.build_data_docs(site_names=["lakehouse"])
    left = make_offline(out)
    if left:
        raise RuntimeError(f"the report still references remote URLs: {sorted(set(left))[:5]}")
    return out / "index.html"


def summary(spark, settings: Settings, last: int = 20) -> list[dict]:
    """Per table and rule: validations, pass rate over the last ``last`` validations, unexpected
    rows over all of them, the last failure."""
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    per_validation = (storage.read(spark, settings, QUALITY_RESULTS.name)
                      .groupBy("table_name", "rule", "validation_id")
                      .agg(F.max("validated_at").alias("at"), F.min(F.col("success").cast("int")).alias("ok"),
                           F.sum("unexpected_count").alias("unexpected"),
                           F.max_by(F.struct("reason", "observed_value", "expectation"),
                                    F.when(~F.col("success"), F.col("validated_at"))).alias("failure")))
    newest = Window.partitionBy("table_name", "rule").orderBy(F.desc("at"), F.desc("validation_id"))
    ranked = per_validation.withColumn("_n", F.row_number().over(newest))
    rows = (ranked.groupBy("table_name", "rule")
            .agg(F.count(F.lit(1)).alias("validations"),
                 F.sum(F.when(F.col("_n") <= last, 1).otherwise(0)).alias("recent"),
                 F.sum(F.when((F.col("_n") <= last) & (F.col("ok") == 1), 1).otherwise(0)).alias("recent_passed"),
                 F.coalesce(F.sum("unexpected"), F.lit(0)).alias("unexpected"),
                 F.max(F.when(F.col("ok") == 0, F.col("at"))).alias("last_failure_at"),
                 F.max_by("failure", F.when(F.col("ok") == 0, F.col("at"))).alias("last_failure"))
            .orderBy("table_name", "rule").collect())
    out = []
    for r in rows:
        failure = r["last_failure"]
        out.append({"table": r["table_name"], "rule": r["rule"], "validations": r["validations"],
                    "recent": r["recent"], "pass_rate": r["recent_passed"] / r["recent"] if r["recent"] else None,
                    "unexpected": int(r["unexpected"] or 0), "last_failure_at": r["last_failure_at"],
                    "last_failure": failure.asDict() if failure is not None else None})
    return out


def faults_by_rule(spark, settings: Settings, manifest: dict) -> dict:
    """A simulator manifest's injected records, found in silver.quarantine by the sha256 of the
    bronze record each row points to (its Kafka position: the quarantine keeps an oversized
    payload cut, bronze keeps it whole), and late events in silver by event id:
    {rule: {kind: records}}, with the kinds not quarantined."""
    from pyspark.sql import functions as F

    kind_of: dict[str, str] = {}
    for record in manifest.get("injected", []):
        kind_of[record["sha256"]] = record["kind"]
    caught: dict[str, dict[str, int]] = {}
    if kind_of:
        shas = spark.createDataFrame([(s,) for s in kind_of], "sha STRING")
        position = list(SILVER_QUARANTINE.keys)  # a quarantine row's key: its bronze record's Kafka position
        found = (storage.read(spark, settings, SILVER_QUARANTINE.name).select(*position, "failed_rules")
                 .join(storage.read(spark, settings, BRONZE_EVENTS.name).select(*position, "value"), position)
                 .select(F.sha2("value", 256).alias("sha"), "failed_rules")
                 .join(F.broadcast(shas), "sha").collect())
        for row in found:
            for rule in row["failed_rules"]:
                kinds = caught.setdefault(rule, {})
                kinds[kind_of[row["sha"]]] = kinds.get(kind_of[row["sha"]], 0) + 1
    late_ids = [r["event_id"] for r in manifest.get("injected", []) if r["kind"] == "late_event"]
    late = 0
    if late_ids:
        late = (storage.read(spark, settings, SILVER_EVENTS.name)
                .where(F.col("event_id").isin(late_ids) & F.col("is_late")).count())
    return {"by_rule": caught, "late_in_silver": late, "injected": dict(manifest.get("faults", {}))}


def _observed_text(observed: str | None) -> str:
    try:
        value = json.loads(observed) if observed else None
    except ValueError:
        return observed or ""
    if isinstance(value, dict) and {"unexpected_count", "element_count"} <= set(value):
        text = f"{value['unexpected_count']} of {value['element_count']} rows"
        return text + (f" (a sample of {value['sampled_from']})" if value.get("sampled_from") else "")
    return "" if value is None else f"observed {json.dumps(value)}"


def report(spark, settings: Settings, *, last: int = 20, out: Path | None = None, manifest: dict | None = None,
           validate_first: bool = True, docs: bool = True, echo: Callable[[str], None] = print) -> dict:
    """``lakehouse dq report``: the summary printed through ``echo``, and Data Docs in ``out``."""
    from lakehouse import stack

    if last < 1:
        raise ConfigError(f"--last must be 1 or more, got {last}")
    storage.ensure_tables(spark, settings)
    out = Path(out) if out is not None else settings.home / "dq-report"
    if validate_first:
        pid = stack.read_pid(settings.home / "stream.pid")
        if pid and pid != os.getpid():
            echo(f"`lakehouse stream` runs (pid {pid}): its data-quality thread validates; reporting what it wrote")
        else:
            runner = QualityRunner(spark, settings)
            runner.run_once()
            runner.close()
    rows = summary(spark, settings, last)
    quarantine = quarantine_counts(spark, settings)
    faults = faults_by_rule(spark, settings, manifest) if manifest else None
    lines = [f"Data quality: pass rate over the last {last} validations of each rule (quality.results)", ""]
    order = {name: i for i, name in enumerate(x.name for x in (*current_rules(), DUPLICATE_RULE, *CHECKS))}
    layers = {"bronze": 0, "silver": 1, "gold": 2}
    for table in sorted({r["table"] for r in rows}, key=lambda t: (layers.get(t.split(".")[0], 3), t)):
        lines.append(table)
        lines.append(f"  {'rule':<30} {'validations':>11} {'pass rate':>9} {'unexpected':>10}  last failure")
        for r in sorted((x for x in rows if x["table"] == table), key=lambda x: (order.get(x["rule"], 999), x["rule"])):
            rate = f"{r['pass_rate']:.0%}" if r["pass_rate"] is not None else "-"
            failure = "-"
            if r["last_failure_at"] is not None:
                f = r["last_failure"] or {}
                failure = f"{r['last_failure_at']:%Y-%m-%d %H:%M:%S} {f.get('reason') or ''}"
                observed = _observed_text(f.get("observed_value"))
                if observed:
                    failure += f" ({observed})"
            lines.append(f"  {r['rule']:<30} {r['validations']:>11} {rate:>9} {r['unexpected']:>10}  {failure[:160]}")
        lines.append("")
    if not rows:
        lines += ["  no validation recorded yet: run `lakehouse stream` or `lakehouse dq run`", ""]
    lines.append("silver.quarantine: records per rule")
    lines += [f"  {q['rule']:<30} {q['quarantined']:>10}" for q in quarantine] or ["  nothing quarantined"]
    lines.append("")
    if faults:
        lines.append("simulator faults (manifest) under the rule that caught them")
        for rule in sorted(faults["by_rule"]):
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(faults["by_rule"][rule].items()))
            lines.append(f"  {rule:<30} {kinds}")
        if faults["late_in_silver"]:
            lines.append(f"  {'(silver.events, is_late)':<30} late_event {faults['late_in_silver']}")
        injected = ", ".join(f"{k} {n}" for k, n in faults["injected"].items() if n)
        lines.append(f"  injected: {injected or 'none'}")
        lines.append("")
    index = None
    if docs:
        index = build_docs(spark, settings, out)
        (out / "summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        lines.append(f"Data Docs (offline): {index}")
    for line in lines:
        echo(line)
    return {"summary": rows, "quarantine": quarantine, "faults": faults, "index": index, "text": "\n".join(lines)}


# --- CLI ----------------------------------------------------------------------------------

def _report_cmd(args) -> int:
    from lakehouse.settings import get_settings
    from lakehouse.spark import get_spark

    settings = get_settings()
    manifest = None
    if args.manifest is not None:
        try:
            manifest = json.loads(Path(args.manifest).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read the manifest {args.manifest}: {e}") from None
    spark = get_spark("lakehouse-dq", settings)
    report(spark, settings, last=args.last, out=args.out, manifest=manifest, validate_first=not args.no_validate)
    return 0


def _run_cmd(args) -> int:
    from lakehouse import pipeline
    from lakehouse.settings import get_settings
    from lakehouse.spark import get_spark

    settings = get_settings()
    pipeline._claim(settings)  # refuses while `lakehouse stream` runs: its own thread validates
    try:
        spark = get_spark("lakehouse-dq", settings)
        storage.ensure_tables(spark, settings)
        runner = QualityRunner(spark, settings)
        done = runner.run_once()
        runner.close()
    finally:
        (settings.home / "stream.pid").unlink(missing_ok=True)
    print(f"validated: {done['bronze']} bronze, {done['silver']} silver and {done['gold']} gold results written "
          "to quality.results")
    return 0


def add_commands(sub) -> None:
    """``lakehouse dq run|report``."""
    dq = sub.add_parser("dq", help="data quality: validate with Great Expectations, report (offline Data Docs)",
                        description="Great Expectations suites built from lakehouse/rules.py. `lakehouse stream` "
                                    "validates every LAKEHOUSE_DQ_INTERVAL_SECONDS by itself.")
    actions = dq.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("run", help="validate what bronze, silver and gold gained since the last validation, once") \
        .set_defaults(func=_run_cmd)
    rep = actions.add_parser("report", help="pass rates, last failures, quarantine counts per rule; Data Docs",
                             description="Validates what is new first (unless the stream runs or --no-validate), "
                                         "prints the summary and builds Data Docs that render offline.")
    rep.add_argument("--last", type=int, default=20, metavar="N", help="pass rate over the last N validations (20)")
    rep.add_argument("--out", type=Path, metavar="DIR", help="Data Docs folder (default $LAKEHOUSE_HOME/dq-report)")
    rep.add_argument("--manifest", type=Path, metavar="FILE",
                     help="a `lakehouse simulate --manifest` file: show its injected faults under the rule that caught them")
    rep.add_argument("--no-validate", action="store_true", help="report what quality.results holds, validate nothing")
    rep.set_defaults(func=_report_cmd)
