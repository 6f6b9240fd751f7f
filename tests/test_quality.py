"""Data quality with Great Expectations: suites built from lakehouse/rules.py, the fail policy,
results kept over time (Delta and PostgreSQL), the offline report, the dashboard page.

Unit tests run GX on tiny inline frames; the integration tests run the real stack (Kafka,
Spark, Delta, PostgreSQL) with the simulator, and Chromium for the report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from lakehouse import quality, rules, storage
from lakehouse.rules import CHECKS, DUPLICATE_RULE, RULES, Check, Expect, Rule, in_set, validate_rules
from lakehouse.settings import ConfigError, get_settings
from lakehouse.silver import transforms as T
from lakehouse.tables import SILVER_EVENTS
from tests.test_pipeline import lake  # noqa: F401 - the fixture: a fresh topic and table root on the session's stack
from tests.test_silver import BAD_RECORDS, bronze, judged, v1

REMOTE = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(https?:)?//""", re.I)


def by_label(rows: list[dict]) -> dict[str, dict]:
    return {(r["rule"], r["expectation"]): r for r in rows}


def offsets(row: dict) -> set[int]:
    return {s["offset"] for s in json.loads(row["sample_rows"] or "[]")}


# --- the declarations -----------------------------------------------------------------------

def test_every_rule_and_check_becomes_great_expectations_without_restating_it():
    validate_rules()
    bronze_items = quality.suite_items("bronze.events")
    # every silver rule is validated on bronze, from its own check
    assert [o.name for o, e in bronze_items if isinstance(o, Rule)] == [r.name for r in RULES]
    # a check declared as an Expect is both the routing predicate and the table expectation
    status = rules.RULES_BY_NAME["status_known"]
    assert status.check == status.expect[0].predicate and status.expect[0].kind == "ExpectColumnValuesToBeInSet"
    silver_items = quality.suite_items("silver.events")
    assert {e.label for _, e in silver_items} == {e.label for r in RULES for e in r.expect}
    assert [e.label for _, e in quality.suite_items("silver.keys")] == ["ExpectColumnValuesToBeUnique(event_key)"]
    every_check = {(c.name, e.label) for c in CHECKS for e in c.expect}
    views = [v for v in quality.VIEWS if v not in ("silver.events", "silver.keys")]
    covered = {(o.name, e.label) for v in views for o, e in quality.suite_items(v) if isinstance(o, Check)}
    assert covered == every_check
    assert all(quality.gx_expectation(o, e) for v in quality.VIEWS for o, e in quality.suite_items(v))


@pytest.mark.parametrize("broken, message", [
    (Rule("bad_policy", 4, "true", "x", policy="explode"), "rule bad_policy: unknown policy"),
    (Rule("no_check", 4, "  ", "x"), "rule no_check: needs a stage 1-4 and a check"),
    (Rule("odd_expect", 4, "true", "x", expect=(Expect("ExpectTheMoon", (("column", "a"),)),)),
     "rule odd_expect: unknown expectation 'ExpectTheMoon'"),
    (Rule("too_lenient", 4, in_set("city", ("Paris",), mostly=1.5), "x"), "rule too_lenient: mostly"),
    (Rule("status_known", 4, "true", "x"), "rule status_known: declared twice"),
])
def test_a_broken_declaration_is_rejected_with_its_name(broken, message):
    with pytest.raises(ValueError, match=message):
        validate_rules((*RULES, broken))


def test_a_check_that_is_not_valid_sql_is_rejected_at_start_up_with_its_name(spark, monkeypatch):
    quality.compile_rules(spark)  # the declared rules compile
    monkeypatch.setattr(rules, "RULES", (*RULES, Rule("typo", 4, "stauts_color = 'Red'", "x")))
    with pytest.raises(ConfigError, match="rule typo: its check is not valid Spark SQL"):
        quality.compile_rules(spark)


def test_interval_setting(monkeypatch):
    monkeypatch.delenv(quality.INTERVAL_ENV, raising=False)
    assert quality.interval_seconds() == 60
    for raw, value in (("0", 0.0), ("2.5", 2.5), ("off", None), ("OFF", None)):
        monkeypatch.setenv(quality.INTERVAL_ENV, raw)
        assert quality.interval_seconds() == value
    for raw in ("-1", "soon"):
        monkeypatch.setenv(quality.INTERVAL_ENV, raw)
        with pytest.raises(ConfigError, match=quality.INTERVAL_ENV):
            quality.interval_seconds()


# --- bronze: every silver rule, on raw records ---------------------------------------------------

def test_each_rule_fires_in_great_expectations_on_its_bad_record_and_not_on_good_ones(spark):
    good = [v1(event_id=f"good-{i}") for i in range(3)]
    batch = bronze(spark, good + [p for p, _ in BAD_RECORDS])
    frame, unavailable = quality.bronze_view(batch, get_settings())
    assert unavailable == {}
    results = by_label(quality.validate(quality._context(), "bronze.events", frame, quality.suite_items("bronze.events"),
                                        info={"validation_id": "t"}))
    for r in RULES:
        row = results[(r.name, f"ExpectColumnValuesToBeInSet(rule_{r.name})")]
        expected = {len(good) + i for i, (_, rule) in enumerate(BAD_RECORDS) if rule == r.name}
        assert row["success"] is False and row["unexpected_count"] == len(expected), (r.name, row)
        assert offsets(row) == expected, r.name
        assert row["reason"] == r.reason and row["policy"] == "quarantine"
    coords = [v for (name, _), v in results.items() if name == "kafka_coordinates"]
    assert len(coords) == 3 and all(c["success"] for c in coords)
    share = results[("parse_share", "ExpectColumnValuesToBeInSet(parses)")]
    parse_failures = sum(1 for _, rule in BAD_RECORDS if rules.RULES_BY_NAME[rule].stage <= 2)
    assert share["unexpected_count"] == parse_failures and share["success"] is False  # 5 of 19 do not parse

    clean = bronze(spark, [v1(event_id=f"clean-{i}") for i in range(20)])
    frame, _ = quality.bronze_view(clean, get_settings())
    rows = quality.validate(quality._context(), "bronze.events", frame, quality.suite_items("bronze.events"),
                            info={"validation_id": "t"})
    assert [r for r in rows if not r["success"]] == []


def test_offset_gaps_within_a_batch_are_caught(spark):
    batch = bronze(spark, [v1(event_id=f"e-{i}") for i in range(6)]).where("offset != 3")
    rows = quality.validate(quality._context(), "bronze.partitions", quality.partitions_view(batch),
                            quality.suite_items("bronze.partitions"), info={"validation_id": "t"})
    (row,) = rows
    assert row["rule"] == "offsets_contiguous" and row["success"] is False
    sample = json.loads(row["sample_rows"])[0]
    assert (sample["first_offset"], sample["last_offset"], sample["missing_offsets"]) == (0, 5, 1)
    # the monitor counts them with Arrow over local files: the same view
    by_arrow = quality.partitions_of(batch.select("topic", "partition", "offset").toArrow())
    assert by_arrow.to_dict("records") == quality.partitions_view(batch).toPandas().to_dict("records")


def test_a_large_batch_is_validated_on_a_sample_that_says_so_while_offset_gaps_see_every_row(spark, monkeypatch):
    monkeypatch.setenv(quality.SAMPLE_ENV, "5")
    runner = quality.QualityRunner(spark, get_settings(), postgres=False)
    assert runner.sample == 5
    batch = bronze(spark, [v1(event_id=f"e-{i}") for i in range(30)] + [b"{broken"]).where("offset != 12")
    rows = by_label(runner.validate_batch(spark, "bronze.events", batch, info={}, key="k", sample=runner.sample))
    per_row = rows[("kafka_coordinates", "ExpectColumnValuesToNotBeNull(topic)")]
    assert per_row["success"] is True and per_row["element_count"] == 5
    assert json.loads(per_row["observed_value"])["sampled_from"] == 30
    assert quality._observed_text(per_row["observed_value"]) == "0 of 5 rows (a sample of 30)"
    gap = rows[("offsets_contiguous", "ExpectColumnValuesToBeBetween(missing_offsets)")]
    assert gap["success"] is False and "sampled_from" not in (gap["observed_value"] or "")
    again = by_label(runner.validate_batch(spark, "bronze.events", batch, info={}, key="k", sample=runner.sample))
    assert again[("valid_utf8", "ExpectColumnValuesToBeInSet(rule_valid_utf8)")]["element_count"] == 5
    whole = by_label(runner.validate_batch(spark, "bronze.events", batch, info={}, key="k"))
    assert whole[("json_object", "ExpectColumnValuesToBeInSet(rule_json_object)")]["unexpected_count"] == 1
    for raw in ("-1", "ten"):
        monkeypatch.setenv(quality.SAMPLE_ENV, raw)
        with pytest.raises(ConfigError, match=quality.SAMPLE_ENV):
            quality.sample_rows()


# --- silver: the rules' expectations on clean rows -------------------------------------------------

def silver_rows(spark, changes: list[dict]):
    """One valid silver row per entry, with the entry's columns changed; offset = position."""
    base = T.valid_events(judged(spark, [v1()])).first().asDict()
    base["event_time"] = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=1)
    rows = [{**base, "event_key": f"v1:e-{i}", "event_id": f"e-{i}", "offset": i, **c} for i, c in enumerate(changes)]
    return spark.createDataFrame([tuple(r[c] for c in SILVER_EVENTS.column_names) for r in rows], SILVER_EVENTS.ddl)


SILVER_BAD = [  # (change, {expectation label: rule})
    ({}, {}),
    ({"status_color": "Blue"}, {"ExpectColumnValuesToBeInSet(status_color)": "status_known",
                                "ExpectColumnPairValuesToBeInSet(status_color, severity_level)": "severity_matches_status"}),
    ({"severity_level": "Severity 9"}, {"ExpectColumnValuesToBeInSet(severity_level)": "severity_matches_status",
                                        "ExpectColumnPairValuesToBeInSet(status_color, severity_level)": "severity_matches_status"}),
    ({"severity_level": "Severity 3"}, {"ExpectColumnPairValuesToBeInSet(status_color, severity_level)": "severity_matches_status"}),
    ({"server_type": "Toasters"}, {"ExpectColumnValuesToBeInSet(server_type)": "server_type_known"}),
    ({"country_code": "fra"}, {"ExpectColumnValuesToMatchRegex(country_code)": "country_code_format"}),
    ({"estimated_resolution_time": -1}, {"ExpectColumnValuesToBeBetween(estimated_resolution_time)": "resolution_time_range"}),
    ({"event_time": dt.datetime(2099, 1, 1)}, {"ExpectColumnValuesToBeBetween(event_time)": "event_time_not_future"}),
    ({"event_time": dt.datetime(1990, 1, 1)}, {"ExpectColumnValuesToBeBetween(event_time)": "event_time_not_future"}),
    ({"city": None}, {"ExpectColumnValuesToNotBeNull(city)": "required_fields"}),
    ({"source_format": "v2"}, {"ExpectColumnValuesToBeInSet(source_format)": "known_format"}),
]


def test_each_silver_expectation_fires_on_its_crafted_row_and_not_on_good_ones(spark):
    frame = silver_rows(spark, [c for c, _ in SILVER_BAD])
    results = quality.validate(quality._context(), "silver.events", frame, quality.suite_items("silver.events"),
                               info={"validation_id": "t"})
    expected: dict[str, set[int]] = {}
    for i, (_, fired) in enumerate(SILVER_BAD):
        for label, rule in fired.items():
            expected.setdefault(label, set()).add(i)
            assert any(r["rule"] == rule and r["expectation"] == label for r in results)
    for row in results:
        want = expected.get(row["expectation"], set())
        assert row["success"] is (not want), row
        assert (row["unexpected_count"] or 0) == len(want), row
        if want:
            assert offsets(row) == want, row

    good = silver_rows(spark, [{} for _ in range(5)])
    assert all(r["success"] for r in quality.validate(quality._context(), "silver.events", good,
                                                      quality.suite_items("silver.events"), info={}))


def test_event_key_uniqueness_is_checked_against_every_row_of_the_table_given(spark):
    table = silver_rows(spark, [{}, {}, {"event_key": "v1:e-0"}])  # a copy of e-0 slipped through
    batch = table.where("offset = 2")
    (row,) = quality.validate(quality._context(), "silver.keys", quality.keys_view(table, batch),
                              quality.suite_items("silver.keys"), info={})
    assert row["rule"] == DUPLICATE_RULE.name and row["success"] is False and row["unexpected_count"] == 2
    (row,) = quality.validate(quality._context(), "silver.keys", quality.keys_view(table, table.where("offset = 1")),
                              quality.suite_items("silver.keys"), info={})
    assert row["success"] is True


def test_a_rule_that_cannot_be_evaluated_is_a_failed_result_with_the_reason_not_a_crash(spark, monkeypatch):
    frame = silver_rows(spark, [{}, {}]).drop("server_type")  # a schema change
    results = by_label(quality.validate(quality._context(), "silver.events", frame,
                                        quality.suite_items("silver.events"), info={}))
    row = results[("server_type_known", "ExpectColumnValuesToBeInSet(server_type)")]
    assert row["success"] is False and row["reason"].startswith("cannot be evaluated")
    assert "server_type" in row["reason"]
    assert results[("status_known", "ExpectColumnValuesToBeInSet(status_color)")]["success"] is True

    # on bronze: a check naming a column the rows no longer have
    monkeypatch.setattr(rules, "RULES", (*RULES, Rule("has_region", 4, "region IS NOT NULL", "no region")))
    frame, unavailable = quality.bronze_view(bronze(spark, [v1()]), get_settings())
    results = by_label(quality.validate(quality._context(), "bronze.events", frame,
                                        quality.suite_items("bronze.events"), info={}, unavailable=unavailable))
    row = results[("has_region", "ExpectColumnValuesToBeInSet(rule_has_region)")]
    assert row["success"] is False and "cannot be evaluated" in row["reason"] and "region" in row["reason"]
    assert results[("status_known", "ExpectColumnValuesToBeInSet(rule_status_known)")]["success"] is True


# --- policy fail ---------------------------------------------------------------------------------

def strict(name: str) -> tuple[Rule, ...]:
    return tuple(dataclasses.replace(r, policy="fail") if r.name == name else r for r in RULES)


def test_policy_fail_stops_with_the_rule_and_samples(spark, monkeypatch):
    records = judged(spark, [v1(), v1(event_id="x", status_color="Blue"), b"{'not': 'json'}"])
    quality.enforce_fail_rules(records)  # no rule has policy fail: nothing happens
    monkeypatch.setattr(rules, "RULES", strict("status_known"))
    with pytest.raises(quality.RuleFailure) as stop:
        quality.enforce_fail_rules(records)
    assert stop.value.rule.name == "status_known" and stop.value.count == 1  # the non-JSON record is not counted
    message = str(stop.value)
    assert "rule status_known (policy fail)" in message and "unknown status colour" in message
    assert '/0/1: {"schema_version": 1, "event_id": "x"' in message
    assert quality.take_failure() is stop.value and quality.take_failure() is None


# --- the report folder -----------------------------------------------------------------------------

def assert_offline(site: Path) -> None:
    pages = list(site.rglob("*.html"))
    assert pages
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not REMOTE.search(text), (page, REMOTE.search(text))
        assert not re.search(r"url\(\s*['\"]?https?://", text), page
        for ref in re.findall(r"""(?:src|href)=["']([^"'#]+)["']""", text):
            if not ref.startswith(("data:", "mailto:", "javascript:")):
                assert (page.parent / ref.split("?")[0]).resolve().exists(), (page, ref)
    for css in site.glob("static/styles/*.css"):
        assert "https://" not in css.read_text(encoding="utf-8")


# --- on the real stack -----------------------------------------------------------------------------

def quality_rows(spark, settings):
    return storage.read(spark, settings, "quality.results")


def pg(settings, sql: str, params=()):
    """Run SQL with the writer role (the serving schema in place); the rows, if any."""
    from tests.test_dashboard import writer_connection

    conn = writer_connection(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params or None)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


@pytest.mark.integration
def test_policy_fail_stops_silver_and_a_restart_after_the_fix_resumes_without_loss(spark, lake, tmp_path,  # noqa: F811
                                                                                  monkeypatch):
    from lakehouse import pipeline, storage
    from tests.test_pipeline import assert_accounting, simulate

    manifest = simulate(lake, tmp_path, "--events", "120", "--faults", "0.1", "--seed", "21",
                        "--fault-kinds", "unknown_status")
    monkeypatch.setattr(rules, "RULES", strict("status_known"))
    with pytest.raises(quality.RuleFailure) as stop:
        pipeline.run(lake, available_now=True)
    assert "rule status_known (policy fail)" in str(stop.value) and "sample records" in str(stop.value)
    assert stop.value.count == manifest["faults"]["unknown_status"] > 0
    # bronze kept everything; silver wrote nothing of the batch
    assert storage.read(spark, lake, "bronze.events").count() == manifest["records"]
    assert storage.read(spark, lake, "silver.events").count() == 0
    assert storage.read(spark, lake, "silver.quarantine").count() == 0
    stops = quality_rows(spark, lake).where("suite = 'silver.stop'").collect()
    assert [(r["rule"], r["success"], r["unexpected_count"]) for r in stops] == [("status_known", False, stop.value.count)]

    monkeypatch.setattr(rules, "RULES", RULES)  # the fix: back to quarantine
    assert pipeline.run(lake, available_now=True) == 0
    n_bronze, _, n_quarantine = assert_accounting(spark, lake)
    assert n_bronze == manifest["records"] and n_quarantine == manifest["faults"]["unknown_status"]
    quarantined = storage.read(spark, lake, "silver.quarantine").where(F.array_contains("failed_rules", "status_known"))
    assert quarantined.count() == manifest["faults"]["unknown_status"]


@pytest.mark.integration
def test_report_after_a_faulty_run_shows_every_fault_under_the_rule_that_caught_it(spark, lake, tmp_path):  # noqa: F811
    from lakehouse import pipeline, storage
    from tests.test_pipeline import EXPECTED_RULE, simulate

    pg(lake, "TRUNCATE quality_results, quality_quarantine")
    manifest = simulate(lake, tmp_path, "--events", "500", "--faults", "0.12", "--seed", "7")
    assert pipeline.run(lake, available_now=True) == 0
    # the data-quality thread of `lakehouse stream` validates bronze, silver and gold by itself
    monitor = quality.QualityMonitor(spark, lake, interval=0.5)
    monitor.start()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not pg(lake, "SELECT 1 FROM quality_results WHERE table_name LIKE 'gold.%' "
                                                       "LIMIT 1"):
        assert monitor.is_alive()
        time.sleep(2)
    monitor.stop()
    assert not monitor.is_alive()
    assert {r[0] for r in pg(lake, "SELECT DISTINCT split_part(table_name, '.', 1) FROM quality_results")} == \
        {"bronze", "silver", "gold"}
    out = tmp_path / "dq-report"
    lines: list[str] = []
    result = quality.report(spark, lake, last=5, out=out, manifest=manifest, echo=lines.append)
    text = "\n".join(lines)

    # every injected fault kind, under the rule that caught it, with the manifest's count
    by_rule = result["faults"]["by_rule"]
    injected = {k: n for k, n in manifest["faults"].items() if n}
    assert set(injected) >= {"malformed_json", "truncated", "wrong_type", "unknown_status", "duplicate", "oversize"}
    for kind, n in injected.items():
        if kind == "late_event":
            assert result["faults"]["late_in_silver"] == n
            assert f"late_event {n}" in text
        elif kind == "missing_field":
            caught = {rule: kinds[kind] for rule, kinds in by_rule.items() if kind in kinds}
            assert set(caught) <= {"required_fields", "known_format"} and sum(caught.values()) == n, caught
        else:
            rule = EXPECTED_RULE[kind]
            assert {r for r, kinds in by_rule.items() if kind in kinds} == {rule}, (kind, by_rule)
            assert by_rule[rule][kind] == n
            assert re.search(rf"^  {rule} +.*\b{kind} {n}\b", text, re.M), (kind, text)
    quarantine = {q["rule"]: q["quarantined"] for q in result["quarantine"]}
    assert quarantine["unique_event"] == injected["duplicate"]

    # Great Expectations counted, on bronze, exactly what silver quarantined under each rule
    results = quality_rows(spark, lake)
    gx_counts = {r["rule"]: r["n"] for r in results.where("suite = 'bronze.events' AND expectation LIKE '%(rule_%'")
                 .groupBy("rule").agg(F.sum("unexpected_count").alias("n")).collect() if r["n"]}
    assert gx_counts == {rule: n for rule, n in quarantine.items() if rule != "unique_event"}
    # the summary: a line per table and rule
    tables = {r["table"] for r in result["summary"]}
    assert tables == {"bronze.events", "silver.events", "gold.status_by_location", "gold.status_by_minute",
                      "gold.incidents"}
    assert re.search(r"^  status_known +1 +0% +\d+", text, re.M)  # bronze: the unknown status faults
    silver_rules = [r for r in result["summary"] if r["table"] == "silver.events"]
    assert silver_rules and all(r["pass_rate"] == 1 for r in silver_rules)  # nothing slipped through

    # the cross-layer gold checks pass on a clean run
    gold = results.where("table_name LIKE 'gold.%'").collect()
    assert {r["rule"] for r in gold} == {"no_negative_totals", "no_negative_totals_by_minute", "gold_matches_silver",
                                         "open_incidents_not_green"}
    assert all(r["success"] for r in gold), [r.asDict() for r in gold if not r["success"]]
    totals = next(r for r in gold if r["rule"] == "gold_matches_silver")
    assert totals["delta_version"] == storage.version(spark, lake, "gold.status_by_location")

    # the same results in PostgreSQL, and the quarantine counts
    n = results.count()
    assert pg(lake, "SELECT count(*) FROM quality_results")[0][0] == n
    assert dict(pg(lake, "SELECT rule, quarantined FROM quality_quarantine")) == quarantine
    samples = json.loads(pg(lake, "SELECT samples FROM quality_quarantine WHERE rule = 'status_known'")[0][0])
    assert 0 < len(samples) <= quality.SAMPLES and "value_text" in samples[0]

    # a second pass validates nothing new: results are written once
    runner = quality.QualityRunner(spark, lake)
    assert runner.run_once() == {"bronze": 0, "silver": 0, "gold": 0}
    runner.close()
    assert quality_rows(spark, lake).count() == n

    # the report renders offline
    assert result["index"] == out / "index.html" and (out / "summary.txt").exists()
    assert_offline(out)
    assert (out / "static" / "vendor" / "bootstrap" / "bootstrap.min.css").exists()
    assert list(out.glob("validations/**/*.html")) and list(out.glob("expectations/**/*.html"))
    screenshot_report(out)

    # gold corrupted on purpose: the cross-layer checks fail
    from delta.tables import DeltaTable

    DeltaTable.forPath(spark, lake.table_path("gold.status_by_location")).update(
        condition=F.expr("status_color = 'Red'"), set={"event_count": F.expr("event_count + 5")})
    state = DeltaTable.forPath(spark, lake.table_path("gold.server_state"))
    open_servers = [r["server_id"] for r in storage.read(spark, lake, "gold.incidents").where("is_open").collect()]
    assert open_servers, "the run should leave open incidents"
    state.update(condition=F.col("server_id") == open_servers[0], set={"status_color": F.lit("Green")})
    snapshot = quality.gold_snapshot(spark, lake)
    rows = by_label(quality.QualityRunner(spark, lake, postgres=False).validate_gold(snapshot))
    totals = rows[("gold_matches_silver", "ExpectColumnPairValuesToBeEqual(gold_event_count, silver_event_count)")]
    assert totals["success"] is False
    sample = json.loads(totals["sample_rows"])[0]
    assert sample["gold_event_count"] > sample["silver_event_count"]
    green = rows[("open_incidents_not_green", "ExpectColumnValuesToNotBeInSet(server_status)")]
    assert green["success"] is False and green["unexpected_count"] == 1
    assert json.loads(green["sample_rows"])[0]["server_id"] == open_servers[0]
    assert rows[("no_negative_totals", "ExpectColumnValuesToBeBetween(event_count)")]["success"] is True


def screenshot_report(site: Path, path: str = "/tmp/dq-report.png") -> None:
    """Open the report from disk in Chromium with every network request refused: it must look right."""
    from tests.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make setup`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            remote: list[str] = []
            context.route(re.compile(r"^https?://"), lambda r: (remote.append(r.request.url), r.abort()))
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto((site / "index.html").as_uri())
            page.wait_for_load_state("load")
            assert page.evaluate("typeof window.jQuery") == "function"
            assert page.evaluate("typeof window.vegaEmbed") == "function"
            assert page.evaluate("!!(window.jQuery && window.jQuery.fn.bootstrapTable)")
            # Bootstrap's stylesheet is applied (its navbar is a flex box) and Font Awesome's font loaded
            assert page.evaluate("getComputedStyle(document.querySelector('nav.navbar')).display") == "flex"
            page.screenshot(path=path, full_page=False)
            validation = next(site.glob("validations/bronze/events/**/*.html"))
            page.goto(validation.as_uri())
            page.wait_for_load_state("load")
            assert page.get_by_text("status_known: no record fails this silver rule").count() == 1
            page.screenshot(path=path.replace(".png", "-validation.png"), full_page=True)
            assert remote == [] and errors == [], (remote, errors)
        finally:
            browser.close()


# --- the dashboard ------------------------------------------------------------------------------

DQ_ROWS = [  # validation_id, minutes ago, suite, table, rule, policy, expectation, success, unexpected, samples, reason
    ("bronze.events/q/1", 50, "bronze.events", "bronze.events", "status_known", "quarantine",
     "ExpectColumnValuesToBeInSet(rule_status_known)", False, 2,
     [{"topic": "t", "partition": 0, "offset": 7, "value_text": "<script>alert(1)</script>"}], "unknown status colour"),
    ("bronze.events/q/1", 50, "bronze.events", "bronze.events", "kafka_coordinates", "check",
     "ExpectColumnValuesToNotBeNull(topic)", True, 0, None, None),
    ("bronze.events/q/2", 5, "bronze.events", "bronze.events", "status_known", "quarantine",
     "ExpectColumnValuesToBeInSet(rule_status_known)", True, 0, None, None),
    ("silver.events/q/1", 5, "silver.events", "silver.events", "status_known", "quarantine",
     "ExpectColumnValuesToBeInSet(status_color)", True, 0, None, None),
    ("gold.layer_totals/x", 3, "gold.layer_totals", "gold.status_by_location", "gold_matches_silver", "check",
     "ExpectColumnPairValuesToBeEqual(gold_event_count, silver_event_count)", False, 1,
     [{"gold_event_count": 12, "silver_event_count": 10}], "the sum of event_count differs"),
]


@pytest.fixture(scope="module")
def dq_client(stack):
    from tests.test_dashboard import configure_django

    rows = [(vid, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=ago), suite, table, 3, None, rule, policy, exp, ok,
             json.dumps({"unexpected_count": n, "element_count": 10}), 10, n, n * 10.0,
             json.dumps(sample) if sample else None, reason)
            for vid, ago, suite, table, rule, policy, exp, ok, n, sample, reason in DQ_ROWS]
    pg(stack.settings, "TRUNCATE quality_results, quality_quarantine")
    from tests.test_dashboard import writer_connection

    conn = writer_connection(stack.settings)
    with conn, conn.cursor() as cur:
        cur.executemany(f"INSERT INTO quality_results VALUES ({', '.join(['%s'] * 16)})", rows)
        cur.execute("INSERT INTO quality_quarantine (rule, quarantined, last_quarantined_at, samples) VALUES "
                    "('status_known', 7, now(), %s), ('json_object', 3, now(), '[]')",
                    [json.dumps([{"topic": "t", "partition": 0, "offset": 7, "reason": "unknown status colour",
                                  "value_text": "{\"status_color\": \"Blue\"}"}])])
    conn.close()
    report = stack.home / "dq-report"
    (report / "static").mkdir(parents=True, exist_ok=True)
    (report / "index.html").write_text("<html><body><script>\nwindow.ok = 1;\n</script>"
                                       "<button onclick=\"go('x')\">x</button></body></html>")
    (report / "static" / "site.css").write_text("body { color: #000; }")
    (stack.home / "secret.txt").write_text("not for the web")
    (report / "escape").symlink_to(stack.home / "secret.txt")
    configure_django()
    from django.test import Client

    yield Client()
    import shutil

    shutil.rmtree(report, ignore_errors=True)


@pytest.mark.integration
def test_quality_api(dq_client):
    response = dq_client.get("/api/quality?range=1h")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    data = response.json()
    assert data["totals"]["validations"] == 4 and data["totals"]["expectations"] == 5
    assert data["totals"]["failed"] == 2 and data["totals"]["pass_rate"] == pytest.approx(3 / 5)
    latest = {(r["table_name"], r["rule"]): r for r in data["latest"]}
    assert latest[("bronze.events", "status_known")]["success"] is True  # its latest validation passed
    assert latest[("gold.status_by_location", "gold_matches_silver")]["success"] is False
    assert [r["table_name"] for r in data["latest"]][0] == "bronze.events"  # bronze, silver, gold
    failures = data["failures"]
    assert failures["total"] == 2 and failures["rows"][0]["rule"] == "gold_matches_silver"
    assert failures["rows"][0]["sample_rows"] == [{"gold_event_count": 12, "silver_event_count": 10}]
    assert failures["rows"][1]["sample_rows"][0]["value_text"] == "<script>alert(1)</script>"  # data, as JSON text
    assert {q["rule"]: q["quarantined"] for q in data["quarantine"]} == {"status_known": 7, "json_object": 3}
    assert data["quarantine"][0]["samples"][0]["offset"] == 7
    assert set(data["pass_rates"]["series"]) == {"bronze", "silver", "gold"}
    assert data["report"]["available"] is True and data["report"]["url"] == "/quality/report/"

    only = dq_client.get("/api/quality?table=bronze.events&rule=status_known&limit=1").json()
    assert only["totals"]["expectations"] == 2 and only["failures"]["total"] == 1
    assert only["filters"] == {"table": "bronze.events", "rule": "status_known"}


@pytest.mark.integration
@pytest.mark.parametrize("query, message", [
    ("table=bronze.nope", "table must be one of"),
    ("rule=drop%20table", "rule must be one of"),
    ("limit=0", "limit must be between 1 and 500"),
    ("offset=-1", "offset must be a whole number"),
    ("range=5y", "range must be one of"),
    ("from=yesterday", "from must be an ISO 8601 timestamp"),
    ("colour=red", "unknown parameter(s): colour"),
    ("rule=status_known&rule=json_object", "given more than once"),
])
def test_quality_api_rejects_bad_input_with_400(dq_client, query, message):
    response = dq_client.get(f"/api/quality?{query}")
    assert response.status_code == 400 and message in response.json()["error"], response.content


@pytest.mark.integration
def test_quality_page_and_nav(dq_client):
    response = dq_client.get("/quality/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '>Data quality</a>' in html and 'aria-current="page"' in html
    assert "/static/dashboard/quality.js" in html and "/static/dashboard/quality.css" in html
    assert "<script>" not in html and "https://" not in html
    assert response["Content-Security-Policy"].startswith("default-src 'self'; script-src 'self';")
    config = json.loads(html.split('id="dash-config" type="application/json">')[1].split("</script>")[0])
    assert config["api"] == "/api/quality" and "status_known" in config["rules"] and "quality.results" in config["tables"]
    assert dq_client.get("/").content.decode().count(">Data quality</a>") == 1
    for asset in ("quality.js", "quality.css"):
        assert dq_client.get(f"/static/dashboard/{asset}").status_code == 200


@pytest.mark.integration
def test_the_report_is_served_from_its_folder_only(dq_client):
    import base64
    import hashlib

    page = dq_client.get("/quality/report/")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    csp = page["Content-Security-Policy"]
    script = base64.b64encode(hashlib.sha256(b"\nwindow.ok = 1;\n").digest()).decode()
    handler = base64.b64encode(hashlib.sha256(b"go('x')").digest()).decode()
    assert f"'sha256-{script}'" in csp and f"'sha256-{handler}'" in csp and "'unsafe-inline'" not in csp.split(";")[1]
    assert "https:" not in csp and "default-src 'self'" in csp
    css = dq_client.get("/quality/report/static/site.css")
    assert css.status_code == 200 and css["Content-Type"].startswith("text/css")
    for bad in ("../secret.txt", "static/../../secret.txt", "escape", "%2e%2e/secret.txt", "static/", "nope.html",
                "/etc/passwd"):
        assert dq_client.get(f"/quality/report/{bad}").status_code == 404, bad


@pytest.mark.integration
def test_quality_page_in_a_browser(dq_client):
    """The page in Chromium: filled from the API, no CSP violation, no request leaves the machine."""
    import threading
    from urllib.parse import urlsplit

    from playwright.sync_api import expect, sync_playwright

    from dashboard.cli import make_server
    from tests.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, CSP_PROBE

    httpd = make_server("127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1440, "height": 1100})
            outside: list[str] = []

            def route(r):
                if urlsplit(r.request.url).netloc != urlsplit(base).netloc:
                    outside.append(r.request.url)
                    return r.abort()
                return r.continue_()

            context.route("**/*", route)
            context.add_init_script(CSP_PROBE)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.add_init_script("window.localStorage.clear()")
            page.goto(base + "/quality/")
            expect(page.locator("#latest-table tbody tr")).to_have_count(4)
            expect(page.locator('[data-value="failed"]')).to_have_text("2")
            expect(page.locator("#quarantine-table tbody tr").first).to_contain_text("status_known")
            expect(page.locator("#failures-table tbody tr")).to_have_count(2)
            # a payload is shown as text, never as markup
            expect(page.locator("#failures-table pre").last).to_contain_text("<script>alert(1)</script>")
            expect(page.locator("#dq-report a")).to_have_attribute("href", "/quality/report/")
            page.wait_for_timeout(400)  # the chart draws
            page.screenshot(path="/tmp/dq-dashboard.png", full_page=True)
            page.select_option("#dq-rule", "gold_matches_silver")
            expect(page.locator("#latest-table tbody tr")).to_have_count(1)
            assert page.evaluate("window.__csp") == [] and outside == [] and errors == []
            browser.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_dq_command_line(spark, tmp_path, capsys, monkeypatch):
    from lakehouse.cli import build_parser, main

    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path))
    args = build_parser().parse_args(["dq", "report", "--last", "3", "--out", str(tmp_path / "r")])
    assert (args.last, args.out, args.no_validate) == (3, tmp_path / "r", False)
    assert main(["dq", "report", "--last", "0", "--no-validate"]) == 2
    assert "--last must be 1 or more" in capsys.readouterr().err
    assert main(["dq", "report", "--manifest", str(tmp_path / "missing.json")]) == 2
    assert "cannot read the manifest" in capsys.readouterr().err


# --- the monitor's new rows: files from the Delta log -------------------------------------------

@pytest.fixture
def own_lake(spark, tmp_path, monkeypatch):
    """Empty tables in a folder of the test's own (no stack: the monitor without PostgreSQL)."""
    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path))
    settings = get_settings()
    storage.ensure_tables(spark, settings)
    return settings


def bronze_files(spark, settings, *batches: list[int], writer: str = "w", first: int = 0) -> None:
    """One bronze append (one file) per list of offsets, each record a valid event."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for i, offs in enumerate(batches):
        rows = bronze(spark, [v1(event_id=f"e-{o}") for o in range(max(offs) + 1)])
        rows = rows.where(F.col("offset").isin(offs)).withColumn("ingested_at", F.lit(now))
        storage.append_once(rows, settings, "bronze.events", writer, first + i)


def file_names(files) -> list[str]:
    return sorted(Path(uri).name for uri, _ in files)


@pytest.mark.parametrize("local", [True, False], ids=["delta-rs and Arrow", "Spark"])
def test_the_monitor_reads_new_files_once_on_a_block_sample_and_offset_gaps_over_every_row(
        spark, own_lake, monkeypatch, local):
    from deltalake import DeltaTable

    if not local:  # as on HDFS: the log, the files and the keys read by Spark
        monkeypatch.setattr(quality, "is_local", lambda location: False)
        monkeypatch.setattr(storage, "is_local", lambda location: False)
    monkeypatch.setenv(quality.SAMPLE_ENV, "8")
    runner = quality.QualityRunner(spark, own_lake, postgres=False)
    bronze_files(spark, own_lake, list(range(10)), list(range(10, 20)))
    assert runner.run_once()["bronze"] > 0
    rows = by_label(quality_rows(spark, own_lake).where("table_name = 'bronze.events'")
                    .toPandas().to_dict("records"))
    checked = rows[("json_object", "ExpectColumnValuesToBeInSet(rule_json_object)")]
    # of 20: a sample, that says so (Spark's draws each row with a probability: about 8)
    assert checked["success"] and (checked["element_count"] == 8 if local else 0 < checked["element_count"] <= 8)
    assert json.loads(checked["observed_value"])["sampled_from"] == 20
    gaps = rows[("offsets_contiguous", "ExpectColumnValuesToBeBetween(missing_offsets)")]
    assert gaps["success"] and gaps["element_count"] == 1

    # compaction changes no data: nothing new; the next append alone, its gap seen
    DeltaTable(own_lake.table_path("bronze.events")).optimize.compact()
    assert runner.run_once()["bronze"] == 0
    bronze_files(spark, own_lake, [20, 21, 22, 24], first=2)
    assert runner.run_once()["bronze"] > 0
    latest = storage.version(spark, own_lake, "bronze.events")
    newest = by_label(quality_rows(spark, own_lake).where(F.col("delta_version") == latest)
                      .toPandas().to_dict("records"))
    gap = newest[("offsets_contiguous", "ExpectColumnValuesToBeBetween(missing_offsets)")]
    assert gap["success"] is False and json.loads(gap["sample_rows"])[0]["missing_offsets"] == 1
    assert newest[("json_object", "ExpectColumnValuesToBeInSet(rule_json_object)")]["element_count"] == 4  # all

    # a restart goes on from what quality.results holds: nothing is validated twice
    again = quality.QualityRunner(spark, own_lake, postgres=False)
    assert again.run_once()["bronze"] == 0
    if local:  # maintenance keeps the versions it has yet to validate
        from lakehouse import timetravel

        bronze_files(spark, own_lake, [25], first=3)
        needs = timetravel.consumer_needs(spark, own_lake, dt.datetime.now(dt.UTC), out=lambda line: None)
        assert f"the data-quality monitor still reads it from version {latest + 1}" in needs["bronze.events"][1]


def test_new_files_are_the_appended_ones_not_compaction_and_all_of_a_rewritten_table(spark, own_lake, monkeypatch):
    from deltalake import DeltaTable

    name = "bronze.events"
    bronze_files(spark, own_lake, [0, 1], [2, 3, 4])
    v = storage.version(spark, own_lake, name)
    appended = storage.new_files(spark, own_lake, name, 0, v)
    assert [n for _, n in sorted(appended, key=lambda f: f[1])] == [2, 3]
    DeltaTable(own_lake.table_path(name)).optimize.compact()  # no data change
    assert storage.new_files(spark, own_lake, name, v, v + 1) == []
    storage.overwrite(storage.read(spark, own_lake, name), own_lake, name)  # data removed: all of it is new
    rewritten = v + 2
    bronze_files(spark, own_lake, [5], first=2)
    latest = storage.version(spark, own_lake, name)
    (last,) = storage.new_files(spark, own_lake, name, rewritten, latest)
    assert last[1] == 1
    snapshot = storage.new_files(spark, own_lake, name, None, latest)
    assert sum(n for _, n in snapshot) == 6
    assert file_names(storage.new_files(spark, own_lake, name, v, latest)) == file_names(snapshot)
    monkeypatch.setattr(storage, "is_local", lambda location: False)  # the same, read by Spark
    assert file_names(storage.new_files(spark, own_lake, name, rewritten, latest)) == file_names([last])
    assert file_names(storage.new_files(spark, own_lake, name, v, latest)) == file_names(snapshot)
    assert sum(n for _, n in storage.new_files(spark, own_lake, name, None, latest)) == 6
    (Path(own_lake.table_path(name)) / "_delta_log" / f"{v + 1:020d}.json").unlink()  # the log cleaned up
    assert storage.new_files(spark, own_lake, name, v, latest) is None
    monkeypatch.undo()
    assert storage.new_files(spark, own_lake, name, v, latest) is None


def test_the_monitor_finds_a_duplicate_key_in_silvers_in_memory_keys_and_judges_a_rewritten_silver_whole(
        spark, own_lake):
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = silver_rows(spark, [{"ingested_at": now}, {"ingested_at": now}])
    storage.append_once(rows, own_lake, SILVER_EVENTS.name, "w", 0)
    runner = quality.QualityRunner(spark, own_lake, postgres=False)
    runner.run_once()
    copy = silver_rows(spark, [{"ingested_at": now, "offset": 7}])  # e-0 again, slipped through
    storage.append_once(copy, own_lake, SILVER_EVENTS.name, "w", 1)
    runner.run_once()
    storage.overwrite(rows, own_lake, SILVER_EVENTS.name)  # a replay rebuilds silver without the copy
    runner.run_once()
    keys = quality_rows(spark, own_lake).where("suite = 'silver.keys'").orderBy("delta_version").collect()
    assert [(r["success"], r["unexpected_count"]) for r in keys] == [(True, 0), (False, 2), (True, 0)]
    assert keys[-1]["delta_version"] == storage.version(spark, own_lake, SILVER_EVENTS.name)
    assert "v1:e-0" in keys[1]["sample_rows"]


def test_the_monitor_rests_in_proportion_to_each_step_and_not_once_stopping():
    runner = quality.QualityRunner(None, get_settings(), postgres=False, pace=2.0)
    began = time.monotonic()
    runner._rest(began - 0.2)  # a step that took 0.2 s
    assert time.monotonic() - began >= 0.4
    runner.stopping.set()
    began = time.monotonic()
    runner._rest(began - 60)
    assert time.monotonic() - began < 5
    unpaced = quality.QualityRunner(None, get_settings(), postgres=False)
    began = time.monotonic()
    unpaced._rest(began - 60)  # `lakehouse dq run`, the report and the bench do not rest
    assert time.monotonic() - began < 5
