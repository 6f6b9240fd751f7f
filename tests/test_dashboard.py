"""The dashboard on a real PostgreSQL: selectors, JSON API, pages, validation, security, CLI.

The serving schema is created and filled with known rows by the writer role; Django reads
with the read-only reader role. The serving tables are truncated when the module starts.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration

SERVING_TABLES = ("status_by_location", "status_by_minute", "server_state", "incidents", "sync_state",
                  "pipeline_batches")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- shared with tests/test_dashboard_browser.py ----------------------------------------------

def writer_connection(settings):
    """The writer role, with the serving schema in place."""
    from lakehouse.stack import writer_url
    from serving import schema

    conn = psycopg2.connect(writer_url(settings))
    schema.apply(conn)
    return conn


def configure_django() -> None:
    """Django on dashboard.settings (the env of the `stack` fixture must already be set)."""
    import django
    from django.test.utils import setup_test_environment

    os.environ["DJANGO_SETTINGS_MODULE"] = "dashboard.settings"
    django.setup()
    try:
        setup_test_environment()  # adds 'testserver' to ALLOWED_HOSTS for django.test.Client
    except RuntimeError:
        pass  # already done by the other dashboard module


@dataclass
class Seeded:
    now: datetime  # the database's now() when seeded
    minute: datetime  # date_trunc('minute', now())


def seed(conn) -> Seeded:
    """Truncate the serving tables and insert the known rows every expectation below is based on."""
    with conn.cursor() as cur:
        cur.execute(f"TRUNCATE {', '.join(SERVING_TABLES)}")
        cur.execute("SELECT now(), date_trunc('minute', now())")
        now, minute = cur.fetchone()
        cur.executemany("INSERT INTO status_by_location VALUES (%s, %s, %s, %s, %s, %s, %s)", [
            ("FR", "France", "Paris", "Red", "Severity 1", 3, 30),
            ("FR", "France", "Paris", "Green", "Severity 3", 5, 20),
            ("DE", "Germany", "Berlin", "Orange", "Severity 2", 2, 10),
            ("DE", "Germany", "Berlin", "Green", "Severity 3", 4, 12),
            ("US", "United States of America", "Washington, D.C.", "Red", "Severity 1", 1, 9),
        ])
        def m(k):
            return minute - timedelta(minutes=k)

        cur.executemany("INSERT INTO status_by_minute VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", [
            (m(2), m(1), "Red", "Web Servers", 2, 16, 8.0, 9),
            (m(2), m(1), "Green", "Web Servers", 6, 18, 3.0, 4),
            (m(3), m(2), "Orange", "Mail Servers", 3, 15, 5.0, 6),
            (m(3), m(2), "Green", "Mail Servers", 4, 12, 3.0, 3),
            (m(30), m(29), "Green", "Web Servers", 10, 30, 3.0, 3),
            (m(120), m(119), "Red", "Web Servers", 7, 56, 8.0, 10),
        ])
        servers = [
            ("srv-t0001", "Web Servers", "FR", "France", "Paris", "Red", "Severity 1", 600),
            ("srv-t0002", "Mail Servers", "DE", "Germany", "Berlin", "Red", "Severity 1", 300),
            ("srv-t0003", "Web Servers", "FR", "France", "Paris", "Orange", "Severity 2", 120),
            ("srv-t0004", "Web Servers", "FR", "France", "Paris", "Green", "Severity 3", 900),
            ("srv-t0005", "Mail Servers", "DE", "Germany", "Berlin", "Green", "Severity 3", 900),
            ("srv-t0006", "Web Servers", "US", "United States of America", "Washington, D.C.", "Green", "Severity 3", 900),
            ("srv-t0007", "Proxy Servers", "DE", "Germany", "Berlin", "Green", "Severity 3", 900),
        ]
        cur.executemany("INSERT INTO server_state VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", [
            (sid, typ, cc, cn, city, color, sev, now - timedelta(seconds=age), now - timedelta(seconds=5),
             f"ev-{sid}", 4) for sid, typ, cc, cn, city, color, sev, age in servers])
        incidents = [  # server, started (s ago), duration (s, None while open), worst severity
            ("srv-t0001", 600, None, "Severity 1"),
            ("srv-t0002", 300, None, "Severity 1"),
            ("srv-t0003", 120, None, "Severity 2"),
            ("srv-t0004", 600, 300, "Severity 2"),  # ended 5 min ago
            ("srv-t0005", 1200, 600, "Severity 1"),  # ended 10 min ago
            ("srv-t0006", 8400, 1200, "Severity 2"),  # ended 2 h ago
        ]
        by_id = {s[0]: s for s in servers}
        rows = []
        for sid, ago, duration, worst in incidents:
            _, typ, cc, cn, city, *_ = by_id[sid]
            started = now - timedelta(seconds=ago)
            ended = started + timedelta(seconds=duration) if duration is not None else None
            rows.append((f"{sid}@{started.isoformat()}", sid, typ, cc, cn, city, started, ended, duration, worst,
                         duration is None))
        cur.executemany("INSERT INTO incidents VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
        cur.executemany(
            "INSERT INTO pipeline_batches (layer, query_id, batch_id, rows_in, rows_out, quarantined, "
            "duplicates_dropped, duration_ms, kafka_lag, table_version, finished_at) "
            "VALUES (%s, 'q', %s, %s, %s, %s, %s, %s, %s, %s, %s)", [
                ("bronze", 1, 80, 80, 0, 0, 400, 20, 11, now - timedelta(seconds=20)),
                ("bronze", 2, 100, 100, 0, 0, 250, 7, 12, now - timedelta(seconds=5)),
                ("silver", 2, 100, 97, 2, 1, 900, None, 8, now - timedelta(seconds=4)),
                ("gold", 1, 97, 40, 0, 0, 1500, None, 5, now - timedelta(hours=3)),
            ])
        cur.executemany("INSERT INTO sync_state (table_name, table_id, delta_version, synced_at) "
                        "VALUES (%s, 'test-table-id', %s, %s)", [
            ("status_by_location", 5, now - timedelta(seconds=3)),
            ("server_state", 9, now - timedelta(seconds=3)),
        ])
    conn.commit()
    return Seeded(now=now, minute=minute)


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def writer(stack):
    conn = writer_connection(stack.settings)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def seeded(writer):
    return seed(writer)


@pytest.fixture(scope="module")
def client(stack, seeded):
    configure_django()
    from django.test import Client

    return Client()


def get_json(client, url, status=200):
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json"
    return response.json()


# --- the read-only role ---------------------------------------------------------------------------

def test_django_reads_with_the_read_only_role(client):
    from django.db import DatabaseError, connection

    with connection.cursor() as cur:
        cur.execute("SELECT current_user, current_setting('default_transaction_read_only')")
        assert cur.fetchone() == ("lakehouse_reader", "on")
    # Read-only by default for the role ...
    with pytest.raises(DatabaseError), connection.cursor() as cur:
        cur.execute("INSERT INTO sync_state (table_name, table_id, delta_version) VALUES ('hack', 'x', 1)")
    # ... and without write privileges when a session asks for read-write.
    with pytest.raises(DatabaseError), connection.cursor() as cur:
        cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; DELETE FROM incidents")
    connection.close()
    with connection.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM incidents")
        assert cur.fetchone()[0] == 6


def test_settings_from_the_environment(client, stack):
    from django.conf import settings

    if not any(os.environ.get(v) for v in ("DJANGO_DEBUG", "DJANGO_ALLOWED_HOSTS", "DJANGO_SECRET_KEY")):
        assert settings.DEBUG is False
        assert settings.ALLOWED_HOSTS[:2] == ["localhost", "127.0.0.1"]
        key_file = stack.settings.home / "django-secret-key"
        assert key_file.read_text().strip() == settings.SECRET_KEY
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not any(app.startswith(("django.contrib.auth", "django.contrib.admin", "django.contrib.sessions",
                                   "django.contrib.contenttypes")) for app in settings.INSTALLED_APPS)
    assert settings.DATABASES["default"]["USER"] == "lakehouse_reader"


def test_database_url_parsing():
    from dashboard.settings import database_from_url
    from lakehouse.settings import ConfigError

    db = database_from_url("postgresql://ro%40user:p%2Fw%3A@db.example:6543/serving?sslmode=require")
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == ("ro@user", "p/w:", "db.example", "6543",
                                                                               "serving")
    assert db["OPTIONS"]["sslmode"] == "require"
    with pytest.raises(ConfigError):
        database_from_url("mysql://u:p@h/db")


# --- selectors ------------------------------------------------------------------------------------

def test_status_by_location_and_events_by_city(client):
    from dashboard import selectors

    rows = selectors.status_by_location()
    assert len(rows) == 5
    assert sum(r["event_count"] for r in rows) == 15
    assert sum(r["total_estimated_resolution_time"] for r in rows) == 81
    assert [r["city"] for r in selectors.status_by_location(country="DE")] == ["Berlin", "Berlin"]
    cities = selectors.events_by_city()
    assert [(c["city"], c["Red"], c["Orange"], c["Green"], c["total"]) for c in cities] == [
        ("Paris", 3, 0, 5, 8), ("Berlin", 0, 2, 4, 6), ("Washington, D.C.", 1, 0, 0, 1)]


def test_overview_selector(client, seeded):
    from dashboard import selectors

    now = seeded.now
    data = selectors.overview(since=now - timedelta(minutes=15), until=now + timedelta(seconds=1))
    tiles = data["tiles"]
    assert tiles["servers"] == {"Red": 2, "Orange": 1, "Green": 4, "total": 7}
    assert tiles["open_incidents"] == 3
    assert tiles["mttr"] == {"seconds": 450.0, "incidents": 2}
    assert tiles["events_per_minute"] == 3.0  # (2 + 6 + 3 + 4) events over the last 5 complete minutes
    assert data["events_by_status"] == {"Red": 2, "Orange": 3, "Green": 10}
    series = data["status_over_time"]
    assert series["bucket_minutes"] == 1
    assert series["times"] == [seeded.minute - timedelta(minutes=3), seeded.minute - timedelta(minutes=2)]
    assert series["series"] == {"Red": [0, 2], "Orange": [3, 0], "Green": [4, 6]}


def test_long_ranges_are_bucketed(client, seeded):
    from dashboard import selectors

    day = selectors.status_over_time(since=seeded.now - timedelta(hours=24), until=seeded.now)
    assert day["bucket_minutes"] == 2
    assert sum(day["series"]["Red"]) == 9 and sum(day["series"]["Green"]) == 20
    week = selectors.status_over_time(since=seeded.now - timedelta(days=7), until=seeded.now)
    assert week["bucket_minutes"] == 14 and len(week["times"]) <= selectors.MAX_CHART_POINTS


def test_server_selectors(client):
    from dashboard import selectors

    page = selectors.server_list(limit=3, offset=0)
    assert page["total"] == 7
    assert [s["status_color"] for s in page["rows"]] == ["Red", "Red", "Orange"]
    assert selectors.server_list(status="Green", country="DE")["total"] == 2
    assert selectors.server_list(city="Washington, D.C.")["rows"][0]["server_id"] == "srv-t0006"
    assert selectors.server_list(server_type="Proxy Servers")["total"] == 1
    assert selectors.server_list(limit=5, offset=5)["rows"][-1]["server_id"] == "srv-t0007"
    facets = selectors.server_facets()
    assert [c["country_code"] for c in facets["countries"]] == ["FR", "DE", "US"]
    assert facets["server_types"] == ["Mail Servers", "Proxy Servers", "Web Servers"]
    history = selectors.server_history("srv-t0005")
    assert [(i["duration_seconds"], i["is_open"]) for i in history] == [(600, False)]
    open_one = selectors.server_history("srv-t0001")[0]
    assert open_one["is_open"] and 600 <= open_one["duration_seconds"] < 900  # duration so far


def test_incident_and_pipeline_selectors(client, seeded):
    from dashboard import selectors

    since, until = seeded.now - timedelta(hours=24), seeded.now + timedelta(seconds=1)
    assert selectors.mttr(since=since, until=until) == {"seconds": 700.0, "incidents": 3}
    by_type = {r["server_type"]: (r["incidents"], r["mttr_seconds"]) for r in selectors.mttr_by("type", since=since,
                                                                                                 until=until)}
    assert by_type == {"Web Servers": (2, 750.0), "Mail Servers": (1, 600.0)}
    by_city = {r["city"]: r["incidents"] for r in selectors.mttr_by("location", since=since, until=until)}
    assert by_city == {"Paris": 1, "Berlin": 1, "Washington, D.C.": 1}
    layers = selectors.pipeline_layers(since=seeded.now - timedelta(hours=1), until=until)
    assert [(layer["layer"], layer["batch_id"], layer["range_batches"]) for layer in layers] == [
        ("bronze", 2, 2), ("silver", 2, 1), ("gold", 1, 0)]
    assert layers[0]["kafka_lag"] == 7 and layers[0]["duration_ms"] == 250 and layers[0]["range_rows_in"] == 180
    assert [(t["table_name"], t["delta_version"]) for t in selectors.table_versions()] == [
        ("server_state", 9), ("status_by_location", 5)]


# --- JSON API -------------------------------------------------------------------------------------

def test_overview_api(client):
    data = get_json(client, "/api/overview?range=15m")
    assert data["range"]["key"] == "15m" and data["range"]["label"] == "Last 15 minutes"
    assert data["tiles"]["servers"] == {"Red": 2, "Orange": 1, "Green": 4, "total": 7}
    assert data["tiles"]["open_incidents"] == 3
    assert data["tiles"]["mttr"] == {"seconds": 450.0, "incidents": 2}
    assert data["tiles"]["events_per_minute"] == 3.0
    assert data["events_by_status"] == {"Red": 2, "Orange": 3, "Green": 10}
    assert data["events_by_city"][0]["city"] == "Paris"
    day = get_json(client, "/api/overview?range=24h")
    assert day["tiles"]["mttr"] == {"seconds": 700.0, "incidents": 3}
    assert day["events_by_status"] == {"Red": 9, "Orange": 3, "Green": 20}


def test_custom_range(client, seeded):
    since = (seeded.now - timedelta(minutes=31)).isoformat()
    until = (seeded.now - timedelta(minutes=10)).isoformat()
    data = get_json(client, f"/api/status-by-minute?from={since.replace('+', '%2B')}&to={until.replace('+', '%2B')}")
    assert data["range"]["key"] == "custom"
    assert sum(data["series"]["Green"]) == 10 and sum(data["series"]["Red"]) == 0
    naive = (seeded.now - timedelta(minutes=31)).astimezone(UTC).replace(tzinfo=None).isoformat()
    assert sum(get_json(client, f"/api/status-by-minute?from={naive}")["series"]["Green"]) == 20


def test_pivot_api_carries_the_report_definition(client):
    from dashboard import report

    data = get_json(client, "/api/pivot")
    assert data["report"] == report.definition()
    assert data["report"]["rows"] == ["city"] and data["report"]["columns"] == ["status_color"]
    assert [m["field"] for m in data["report"]["measures"]] == ["event_count", "total_estimated_resolution_time"]
    assert len(data["rows"]) == 5 and not data["truncated"]
    assert sum(r["event_count"] for r in data["rows"]) == 15
    assert get_json(client, "/api/status-by-location?country=fr&city=Paris")["rows"][0]["country_code"] == "FR"


def test_servers_api_filters_and_paginates(client):
    page = get_json(client, "/api/servers?status=red")
    assert page["total"] == 2 and {s["server_id"] for s in page["rows"]} == {"srv-t0001", "srv-t0002"}
    page = get_json(client, "/api/servers?limit=2&offset=2")
    assert (page["total"], page["limit"], page["offset"], len(page["rows"])) == (7, 2, 2, 2)
    assert get_json(client, "/api/servers?type=Web+Servers&country=FR")["total"] == 3
    assert get_json(client, "/api/servers?city=Washington%2C+D.C.")["total"] == 1
    assert get_json(client, "/api/servers/facets")["statuses"] == ["Red", "Orange", "Green"]
    one = get_json(client, "/api/servers/srv-t0001")
    assert one["server"]["status_color"] == "Red" and one["incidents"][0]["is_open"] is True
    assert "error" in get_json(client, "/api/servers/srv-unknown", status=404)


def test_incidents_api(client):
    data = get_json(client, "/api/incidents?range=1h&limit=1")
    assert data["open"]["total"] == 3
    assert [i["server_id"] for i in data["open"]["rows"]] == ["srv-t0001", "srv-t0002", "srv-t0003"]
    assert (data["closed"]["total"], len(data["closed"]["rows"])) == (2, 1)
    assert data["closed"]["rows"][0]["server_id"] == "srv-t0004"  # most recently closed first
    assert data["mttr"] == {"seconds": 450.0, "incidents": 2}
    assert {r["server_type"] for r in data["mttr_by_type"]} == {"Web Servers", "Mail Servers"}
    assert get_json(client, "/api/incidents?range=1h&limit=1&offset=1")["closed"]["rows"][0]["server_id"] == "srv-t0005"


def test_pipeline_api(client):
    data = get_json(client, "/api/pipeline?range=1h")
    assert [layer["layer"] for layer in data["layers"]] == ["bronze", "silver", "gold"]
    assert data["layers"][1]["quarantined"] == 2 and data["layers"][1]["duplicates_dropped"] == 1
    assert [(b["layer"], b["batch_id"]) for b in data["batches"]] == [("bronze", 1), ("bronze", 2), ("silver", 2)]
    assert {t["table_name"] for t in data["tables"]} == {"status_by_location", "server_state"}


@pytest.mark.parametrize("url", [
    "/api/servers?limit=0",
    "/api/servers?limit=501",
    "/api/servers?limit=-1",
    "/api/servers?limit=ten",
    "/api/servers?offset=99999999",
    "/api/servers?status=Purple",
    "/api/servers?status=Red%27%20OR%201%3D1--",
    "/api/servers?city=x%27%3B%20DROP%20TABLE%20incidents%3B--",
    "/api/servers?city=%00",
    "/api/servers?country=FRA",
    "/api/servers?status=Red&status=Green",
    "/api/servers?sort=server_id",
    "/api/overview?range=2h",
    "/api/overview?range=custom",
    "/api/overview?from=yesterday",
    "/api/overview?from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z",
    "/api/overview?from=2025-01-01T00:00:00Z&to=2025-03-01T00:00:00Z",
    "/api/overview?range=15m&from=2025-01-01T00:00:00Z",
    "/api/overview?to=2025-01-01T00:00:00Z",
    "/api/overview?from=1900-01-01T00:00:00Z",
    "/api/incidents?limit=1e3",
    "/api/pivot?x=1",
    "/api/servers/srv-t0001?limit=0",
])
def test_bad_query_parameters_get_400_json(client, url):
    data = get_json(client, url, status=400)
    assert data["error"] and isinstance(data["error"], str)


def test_bad_input_never_reached_sql(client):
    assert get_json(client, "/api/servers")["total"] == 7
    assert get_json(client, "/api/incidents")["open"]["total"] == 3


def test_api_is_read_only_and_json_everywhere(client):
    assert client.post("/api/overview").status_code in (403, 405)
    assert get_json(client, "/api/no-such-endpoint", status=404)["error"]
    response = client.get("/api/overview")
    assert response["Cache-Control"] == "no-store"


def test_api_answers_come_from_the_server_cache_until_it_expires(client, writer):
    """Within DASHBOARD_CACHE_SECONDS a URL gets the same body although the table changed; another
    query string, a later request, or the cache turned off (0) sees the change."""
    from django.core.cache import cache
    from django.test import override_settings

    url = "/api/servers?status=red"
    cache.clear()
    try:
        with override_settings(DASHBOARD_CACHE_SECONDS=5):
            first = client.get(url)
            with writer.cursor() as cur:
                cur.execute("INSERT INTO server_state SELECT 'srv-t0099', 'Web Servers', 'FR', 'France', 'Paris', "
                            "'Red', 'Severity 1', now(), now(), 'ev-99', 7")
            writer.commit()
            again = client.get(url)
            assert again.content == first.content and json.loads(first.content)["total"] == 2
            assert again["Content-Type"] == "application/json" and again["Cache-Control"] == "no-store"
            assert again["Content-Security-Policy"].startswith("default-src 'self'")
            assert get_json(client, url + "&limit=49")["total"] == 3  # keyed by the whole query
            deadline = time.monotonic() + 30
            while get_json(client, url)["total"] == 2:
                assert time.monotonic() < deadline, "the cached answer never expired"
                time.sleep(0.5)
        with writer.cursor() as cur:
            cur.execute("DELETE FROM server_state WHERE server_id = 'srv-t0099'")
        writer.commit()
        with override_settings(DASHBOARD_CACHE_SECONDS=0):
            assert get_json(client, url)["total"] == 2
    finally:
        with writer.cursor() as cur:
            cur.execute("DELETE FROM server_state WHERE server_id = 'srv-t0099'")
        writer.commit()
        cache.clear()


def test_server_answers_60_concurrent_clients_with_kept_connections(client, stack):
    """make_server (waitress) under 60 simultaneous clients, the cache off so that each request
    queries PostgreSQL: every one answered, by worker threads that keep their connections."""
    from django.test import override_settings

    from dashboard.cli import THREADS, make_server
    from lakehouse.stack import reader_url

    monitor = psycopg2.connect(reader_url(stack.settings))
    monitor.autocommit = True
    with monitor.cursor() as cur:
        cur.execute("SELECT now()")
        started = cur.fetchone()[0]
    httpd = make_server("127.0.0.1", 0)
    server = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    server.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/api/overview?range=15m"
    together = threading.Barrier(60, timeout=60)

    def fetch(_):
        together.wait()
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, json.load(r)["tiles"]["servers"]["total"]

    try:
        with override_settings(DASHBOARD_CACHE_SECONDS=0), ThreadPoolExecutor(60) as pool:
            answers = list(pool.map(fetch, range(60)))
        with monitor.cursor() as cur:  # the server's own connections, opened during the burst, still open
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = current_user "
                        "AND pid <> pg_backend_pid() AND backend_start >= %s", (started,))
            kept = cur.fetchone()[0]
    finally:
        httpd.shutdown()
        httpd.server_close()
        monitor.close()
    assert answers == [(200, 7)] * 60
    assert 1 <= kept <= THREADS
    assert not server.is_alive()  # shutdown() ended serve_forever


# --- pages and security headers ---------------------------------------------------------------------

@pytest.mark.parametrize("url", ["/", "/pivot/", "/servers/", "/servers/srv-t0001/", "/incidents/", "/pipeline/"])
def test_pages_render_with_security_headers_and_no_remote_url(client, url, monkeypatch):
    monkeypatch.delenv("FLEXMONSTER_LICENSE_KEY", raising=False)
    response = client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert response["Content-Security-Policy"].startswith("default-src 'self'; script-src 'self'; style-src 'self';")
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert "<script>" not in html  # no inline script: data goes through json_script
    assert 'id="dash-config" type="application/json"' in html
    for nav in ("Overview", "Pivot", "Servers", "Incidents", "Pipeline"):
        assert f">{nav}</a>" in html


def test_pivot_page_renderer_follows_the_licence_key(client, monkeypatch):
    monkeypatch.delenv("FLEXMONSTER_LICENSE_KEY", raising=False)
    html = client.get("/pivot/").content.decode()
    config = json.loads(html.split('id="dash-config" type="application/json">')[1].split("</script>")[0])
    assert config["renderer"] == "pivottable" and "flexmonster" not in config
    assert "vendor/pivottable/pivot.min.js" in html and "flexmonster.full.js" not in html

    monkeypatch.setenv("FLEXMONSTER_LICENSE_KEY", "TEST-KEY-1234")
    response = client.get("/pivot/")
    html = response.content.decode()
    config = json.loads(html.split('id="dash-config" type="application/json">')[1].split("</script>")[0])
    assert config["renderer"] == "flexmonster"
    assert config["flexmonster"] == {"licenseKey": "TEST-KEY-1234", "componentFolder": "/static/vendor/flexmonster/"}
    assert "/static/vendor/flexmonster/flexmonster.full.js" in html
    csp = response["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "style-src 'self' 'unsafe-inline'" in csp
    assert "unsafe-inline" not in client.get("/").headers["Content-Security-Policy"]  # only the pivot page


def test_static_files_are_served_with_debug_off(client):
    from django.conf import settings

    assert settings.DEBUG is False
    response = client.get("/static/dashboard/common.js")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/javascript")
    assert client.get("/static/dashboard/nope.js").status_code == 404
    assert client.get("/static/../settings.py").status_code == 404


# --- the command ------------------------------------------------------------------------------------

def test_cli_serves_and_prints_the_url(stack, seeded):
    import argparse

    from dashboard import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert vars(parser.parse_args([])) == {"port": 8000, "host": "127.0.0.1"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--port", "70000"])

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dashboard.cli", "--port", str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DJANGO_SETTINGS_MODULE": "dashboard.settings"})
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview?range=15m", timeout=5) as r:
                    assert json.load(r)["tiles"]["servers"]["total"] == 7
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
