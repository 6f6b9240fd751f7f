"""The dashboard in a real browser (Debian's Chromium through Playwright) on a real PostgreSQL.

The app is served on a free port from a background thread (dashboard.cli.make_server);
rows are written with the writer role, and the pages must show them, live.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.test_dashboard import configure_django, seed, writer_connection

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VENDOR = Path(__file__).resolve().parents[1] / "dashboard" / "static" / "vendor"
# Collects Content-Security-Policy violations, so a test can assert there were none.
CSP_PROBE = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
             "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


@pytest.fixture(scope="module")
def writer(stack):
    conn = writer_connection(stack.settings)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def server(stack, writer):
    """The dashboard on a free port, serving from a background thread."""
    for asset in ("echarts/echarts.min.js", "pivottable/pivot.min.js", "jquery/jquery.min.js",
                  "jquery-ui/jquery-ui.min.js", "flexmonster/flexmonster.full.js"):
        if not (VENDOR / asset).exists():
            pytest.fail(f"front-end asset dashboard/static/vendor/{asset} is missing: run `make setup` "
                        "(npm ci, then copy into dashboard/static/vendor/)")
    seed(writer)
    configure_django()
    from dashboard.cli import make_server

    httpd = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make setup` (installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh page that may reach the dashboard only; any other request is recorded and refused."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    outside: list[str] = []
    local = urlsplit(server).netloc

    def route(r):
        parts = urlsplit(r.request.url)
        if parts.scheme in ("http", "https") and parts.netloc != local:
            outside.append(r.request.url)
            return r.abort()
        return r.continue_()

    context.route("**/*", route)
    context.add_init_script(CSP_PROBE)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.outside, pg.errors = outside, errors
    yield pg
    context.close()


def tile(page, name: str):
    return page.locator(f'[data-value="{name}"]').first


def test_overview_shows_the_numbers_and_follows_new_rows_without_reload(page, server, writer):
    from playwright.sync_api import expect

    page.goto(server + "/")
    page.select_option("#refresh-select", "2")  # the fastest refresh the page offers
    expect(tile(page, "servers_red")).to_have_text("2")
    expect(tile(page, "servers_orange")).to_have_text("1")
    expect(tile(page, "servers_green")).to_have_text("4")
    expect(tile(page, "servers_total")).to_have_text("7")
    expect(tile(page, "open_incidents")).to_have_text("3")
    expect(tile(page, "events_per_minute")).to_have_text("3")
    expect(tile(page, "mttr")).to_have_text("7m 30s")  # the seeded incidents closed in the last hour: 300 s and 600 s
    # Severity is told by text as well as by colour.
    expect(page.locator("#tile-red .tile-label")).to_have_text("Red servers")
    expect(page.locator("#live-status")).to_contain_text("Live")
    assert [o.get_attribute("value") for o in page.locator("#refresh-select option").all()] == ["2", "5", "10", "30"]
    page.wait_for_timeout(300)  # the charts draw
    page.screenshot(path="/tmp/dashboard-overview.png", full_page=True)

    page.evaluate("window.__sameDocument = true")
    with writer.cursor() as cur:
        cur.execute("INSERT INTO server_state SELECT 'srv-t0008', 'Web Servers', 'FR', 'France', 'Paris', 'Red', "
                    "'Severity 1', now(), now(), 'ev-8', 7")
        cur.execute("INSERT INTO incidents SELECT 'srv-t0008@now', 'srv-t0008', 'Web Servers', 'FR', 'France', "
                    "'Paris', now(), NULL, NULL, 'Severity 1', true")
        cur.execute("INSERT INTO status_by_minute SELECT date_trunc('minute', now()) - interval '4 minutes', "
                    "date_trunc('minute', now()) - interval '3 minutes', 'Red', 'Web Servers', 10, 70, 7.0, 7")
    writer.commit()
    expect(tile(page, "servers_red")).to_have_text("3", timeout=8000)
    expect(tile(page, "open_incidents")).to_have_text("4", timeout=8000)
    expect(tile(page, "events_per_minute")).to_have_text("5", timeout=8000)  # (15 + 10) / 5
    assert page.evaluate("window.__sameDocument") is True  # updated in place, not reloaded
    assert page.evaluate("window.__csp") == []
    assert page.outside == [] and page.errors == []


def test_time_range_selector_changes_the_range(page, server):
    from playwright.sync_api import expect

    page.goto(server + "/")
    expect(tile(page, "mttr_incidents")).to_have_text("2")
    with page.expect_response(lambda r: "/api/overview?range=24h" in r.url):
        page.select_option("#range-select", "24h")
    expect(tile(page, "mttr_incidents")).to_have_text("3")
    expect(page.locator('[data-value="range_label"]').first).to_have_text("Last 24 hours")
    page.select_option("#range-select", "custom")
    expect(page.locator("#custom-range")).to_be_visible()


def test_default_pivot_renders_the_report_with_its_totals(page, server, monkeypatch):
    from playwright.sync_api import expect

    monkeypatch.delenv("FLEXMONSTER_LICENSE_KEY", raising=False)
    page.goto(server + "/pivot/")
    expect(page.locator("#pivot-renderer")).to_contain_text("PivotTable.js")
    table = page.locator("#pivot table.pvtTable")
    expect(table).to_be_visible()
    # Columns in status order, with their names as text; rows are cities.
    expect(table.locator("th.pvtColLabel")).to_have_text(["Red", "Orange", "Green"])
    expect(table.locator("th.pvtRowLabel")).to_have_text(["Berlin", "Paris", "Washington, D.C."])
    expect(table.locator("td.pvtTotal.colTotal")).to_have_text(["4", "2", "9"])
    expect(table.locator("td.pvtTotal.rowTotal")).to_have_text(["6", "8", "1"])
    expect(table.locator("td.pvtGrandTotal")).to_have_text("15")
    expect(table.locator("th.pvt-status-red")).to_have_count(1)
    page.screenshot(path="/tmp/dashboard-pivot.png", full_page=True)

    # The report's second measure.
    page.select_option("#pivot select.pvtAggregator", "Total est. resolution time (min)")
    expect(page.locator("#pivot td.pvtGrandTotal")).to_have_text("81")

    with page.expect_download() as download:
        page.click("#pivot-export")
    csv = Path(download.value.path()).read_text(encoding="utf-8-sig")
    lines = csv.strip().splitlines()
    assert lines[0] == "City,Red,Orange,Green,Totals"
    assert lines[-1] == "Totals,39,10,32,81"
    assert '"Washington, D.C.",9,,,9' in lines
    assert page.evaluate("window.__csp") == []
    assert page.outside == [] and page.errors == []


def test_flexmonster_with_a_key_is_served_locally_and_shows_its_licence_box(page, server, monkeypatch):
    from playwright.sync_api import expect

    monkeypatch.setenv("FLEXMONSTER_LICENSE_KEY", "dummy-licence-key-for-tests")
    responses = []
    page.on("response", lambda r: responses.append((r.url, r.status)))
    page.goto(server + "/pivot/")
    config = page.evaluate("JSON.parse(document.getElementById('dash-config').textContent)")
    assert config["renderer"] == "flexmonster"
    assert config["flexmonster"]["licenseKey"] == "dummy-licence-key-for-tests"
    expect(page.get_by_text(re.compile(r"licen[cs]e key", re.IGNORECASE)).first).to_be_visible(timeout=15000)
    expect(page.get_by_text("dummy-licence-key-for-tests")).to_be_visible()  # Flexmonster got the key
    flexmonster = [(u, s) for u, s in responses if "/vendor/flexmonster/" in u]
    assert (server + "/static/vendor/flexmonster/flexmonster.full.js", 200) in flexmonster
    assert all(s == 200 and u.startswith(server) for u, s in flexmonster)
    page.screenshot(path="/tmp/dashboard-pivot-flexmonster.png")
    assert page.outside == []


def test_servers_page_filters_and_links_to_a_server(page, server):
    from playwright.sync_api import expect

    page.goto(server + "/servers/?status=Red&country=DE")  # filters can come in the URL
    rows = page.locator("#server-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.locator(".badge")).to_have_text(["Red"])
    expect(page.locator("#filter-country")).to_have_value("DE")
    page.select_option("#filter-status", "")
    expect(rows).to_have_count(3)
    expect(page.locator("#server-count")).to_have_text("3 servers")
    expect(page).to_have_url(server + "/servers/?country=DE")
    page.select_option("#filter-type", "Proxy Servers")
    expect(rows).to_have_count(1)
    page.click("#filter-reset")
    expect(page.locator("#filter-country")).to_have_value("")
    page.select_option("#filter-country", "DE")
    page.click("text=srv-t0002")
    expect(page).to_have_url(server + "/servers/srv-t0002/")
    expect(page.locator("#server-incidents tbody tr")).to_have_count(1)
    expect(page.locator("#server-status .badge")).to_have_text("Red")


def test_incidents_and_pipeline_pages(page, server, writer):
    from playwright.sync_api import expect

    with writer.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM incidents WHERE is_open")
        open_now = cur.fetchone()[0]
    writer.rollback()
    page.goto(server + "/incidents/")
    expect(page.locator('[data-value="open_total"]')).to_have_text(str(open_now))
    expect(page.locator("#open-table tbody tr")).to_have_count(open_now)
    expect(page.locator("#closed-table tbody tr")).to_have_count(2)
    expect(page.locator("#mttr-type tbody tr")).to_have_count(2)
    page.goto(server + "/pipeline/")
    expect(page.locator("#layer-table tbody tr")).to_have_count(3)
    expect(page.locator('#layer-table tr[data-layer="gold"] .badge')).to_have_text("stale")
    expect(page.locator("#table-versions tbody tr")).to_have_count(2)
    assert page.evaluate("window.__csp") == []
    assert page.errors == []

