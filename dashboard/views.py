"""Pages and the JSON API of the dashboard. Views are thin: validate, call a selector, render.

Pages are HTML shells; their scripts fetch the JSON API below and poll it. API conventions:

* GET only; every response is JSON with ``Cache-Control: no-store``.
* The serving-table endpoints (this module) answer from a server-side cache for
  ``DASHBOARD_CACHE_SECONDS`` (1 s): see ``cached``.
* Unknown, repeated or malformed query parameters -> 400 ``{"error": "..."}``.
* Time-based endpoints take ``range=15m|1h|24h`` (default 1h) or ``from=ISO&to=ISO``
  (``to`` defaults to now; naive timestamps are UTC; at most 31 days).
* Large lists are paginated with ``limit`` (1..500, default 50) and ``offset`` (0..1e6);
  the response carries ``total``, ``limit``, ``offset`` and ``rows``.
* The serving database unreachable or not yet created -> 503 ``{"error": "..."}``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard import params, report, selectors
from dashboard.params import BadParam

log = logging.getLogger(__name__)

REFRESH_CHOICES = (2, 5, 10, 30)  # seconds; the pages never poll faster than 2 s
NAV = (("overview", "Overview", "/"), ("pivot", "Pivot", "/pivot/"), ("servers", "Servers", "/servers/"),
       ("incidents", "Incidents", "/incidents/"), ("pipeline", "Pipeline", "/pipeline/"),
       ("time-travel", "Time travel", "/time-travel/"), ("quality", "Data quality", "/quality/"))


def _json(data, status: int = 200) -> JsonResponse:
    response = JsonResponse(data, status=status, encoder=DjangoJSONEncoder, json_dumps_params={"allow_nan": False})
    response["Cache-Control"] = "no-store"
    return response


def api(*allowed: str):
    """Wrap an API view: GET only, only the `allowed` parameters, 400/503 as JSON, never a 500 for input."""
    def decorate(fn):
        @require_GET
        @functools.wraps(fn)
        def view(request, *args, **kwargs):
            try:
                params.reject_unknown(request.GET, allowed)
                data = fn(request, *args, **kwargs)
            except BadParam as e:
                return _json({"error": str(e)}, status=400)
            except DatabaseError as e:
                log.warning("serving database error in %s: %s", request.path, str(e).strip().splitlines()[0])
                return _json({"error": "the serving database is not available or not set up yet "
                                       "(is the pipeline running?)"}, status=503)
            if isinstance(data, JsonResponse):
                return data
            data.setdefault("generated_at", datetime.now(UTC))
            return _json(data)
        return view
    return decorate


def cached(view):
    """Serve a view's 200 JSON answers from the server's cache for DASHBOARD_CACHE_SECONDS, per
    path + query. The pipeline refreshes the serving tables every few seconds, so answers up to a
    second old show nothing stale, while any number of polling clients cost one query per URL per
    second. Browsers still get ``no-store``; errors are never cached."""
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        seconds = settings.DASHBOARD_CACHE_SECONDS
        if not seconds or request.method != "GET":
            return view(request, *args, **kwargs)
        key = "api:" + hashlib.sha256(request.get_full_path().encode()).hexdigest()
        body = cache.get(key)
        if body is not None:
            response = HttpResponse(body, content_type="application/json")
            response["Cache-Control"] = "no-store"
            return response
        response = view(request, *args, **kwargs)
        if response.status_code == 200 and response.get("Content-Type") == "application/json":
            cache.set(key, response.content, seconds)
        return response
    return wrapper


# --- pages --------------------------------------------------------------------------------

def _page(request, template: str, page: str, **config):
    config = {
        "page": page,
        "refresh_choices": REFRESH_CHOICES,
        "ranges": [{"key": k, "label": v} for k, v in params.RANGE_LABELS.items()],
        "default_range": params.DEFAULT_RANGE,
        **config,
    }
    return render(request, f"dashboard/{template}", {"nav": NAV, "page": page, "config": config})


@require_GET
def overview_page(request):
    return _page(request, "overview.html", "overview", api="/api/overview", time_based=True)


@require_GET
def pivot_page(request):
    renderer = report.renderer()
    config = {"api": "/api/pivot", "time_based": False, "renderer": renderer, "report": report.definition()}
    if renderer == "flexmonster":
        config["flexmonster"] = {"licenseKey": report.flexmonster_license_key(),
                                 "componentFolder": f"{settings.STATIC_URL}vendor/flexmonster/"}
    return _page(request, "pivot.html", "pivot", **config)


@require_GET
def servers_page(request):
    return _page(request, "servers.html", "servers", api="/api/servers", facets="/api/servers/facets",
                 time_based=False, page_size=50)


@require_GET
def server_page(request, server_id: str):
    return _page(request, "server.html", "servers", api="/api/servers/", time_based=False, server_id=server_id)


@require_GET
def incidents_page(request):
    return _page(request, "incidents.html", "incidents", api="/api/incidents", time_based=True, page_size=50)


@require_GET
def pipeline_page(request):
    return _page(request, "pipeline.html", "pipeline", api="/api/pipeline", time_based=True)


# --- JSON API -----------------------------------------------------------------------------

@cached
@api(*params.TIME_PARAMS)
def overview_api(request):
    """GET /api/overview?range=|from=&to= -- tiles (events/min over the last 5 complete minutes,
    servers by status now, open incidents, MTTR of incidents closed in the range), events by
    status in the range, events by city (all time) and events per status over time."""
    window = params.time_range(request.GET)
    return {"range": window.as_json(), **selectors.overview(since=window.since, until=window.until)}


@cached
@api()
def pivot_api(request):
    """GET /api/pivot -- the pivot report definition and every status_by_location row (one per
    city, status and severity: small, so not paginated; capped at 10000 rows)."""
    rows = selectors.status_by_location(limit=10001)
    return {"report": report.definition(), "rows": rows[:10000], "truncated": len(rows) > 10000}


@cached
@api("country", "city")
def status_by_location_api(request):
    """GET /api/status-by-location?country=FR&city=Paris -- status_by_location rows, filtered."""
    rows = selectors.status_by_location(country=params.country(request.GET), city=params.text(request.GET, "city"))
    return {"rows": rows}


@cached
@api(*params.TIME_PARAMS)
def status_by_minute_api(request):
    """GET /api/status-by-minute?range= -- events per time bucket and status colour (bucket of
    1 minute, larger for long ranges so that there are at most 720 buckets)."""
    window = params.time_range(request.GET)
    return {"range": window.as_json(), **selectors.status_over_time(since=window.since, until=window.until)}


@cached
@api("status", "country", "city", "type", "limit", "offset")
def servers_api(request):
    """GET /api/servers?status=Red&country=FR&city=Paris&type=web&limit=50&offset=0 -- servers
    and their current status, worst first; paginated."""
    q = request.GET
    limit, offset = params.page(q)
    return selectors.server_list(status=params.status(q), country=params.country(q), city=params.text(q, "city"),
                                 server_type=params.text(q, "type"), limit=limit, offset=offset)


@cached
@api()
def server_facets_api(request):
    """GET /api/servers/facets -- the countries, cities, server types and statuses to filter by."""
    return selectors.server_facets()


@cached
@api("limit")
def server_api(request, server_id: str):
    """GET /api/servers/<server_id>?limit=50 -- one server's state and its incidents, newest
    first; 404 when the server is unknown."""
    server_id = params.server_id(server_id)
    limit = params.integer(request.GET, "limit", default=50, minimum=1, maximum=params.MAX_LIMIT)
    state = selectors.server(server_id)
    if state is None:
        return _json({"error": f"no server {server_id!r}"}, status=404)
    return {"server": state, "incidents": selectors.server_history(server_id, limit=limit)}


@cached
@api(*params.TIME_PARAMS, "limit", "offset")
def incidents_api(request):
    """GET /api/incidents?range=&limit=&offset= -- open incidents (duration so far), incidents
    closed in the range (paginated by limit/offset), and MTTR overall, by location and by type."""
    window = params.time_range(request.GET)
    limit, offset = params.page(request.GET)
    since, until = window.since, window.until
    return {
        "range": window.as_json(),
        "open": selectors.open_incidents(limit=params.MAX_LIMIT),
        "closed": selectors.closed_incidents(since=since, until=until, limit=limit, offset=offset),
        "mttr": selectors.mttr(since=since, until=until),
        "mttr_by_location": selectors.mttr_by("location", since=since, until=until),
        "mttr_by_type": selectors.mttr_by("type", since=since, until=until),
    }


@cached
@api(*params.TIME_PARAMS)
def pipeline_api(request):
    """GET /api/pipeline?range= -- per layer the last batch (rows, duration, Kafka lag, age) and
    totals over the range; the batches of the range (at most 2000) and the served tables'
    Delta versions (sync_state)."""
    window = params.time_range(request.GET)
    return {
        "range": window.as_json(),
        "layers": selectors.pipeline_layers(since=window.since, until=window.until),
        "batches": selectors.pipeline_batches(since=window.since, until=window.until),
        "tables": selectors.table_versions(),
    }


def api_not_found(request, *args, **kwargs):
    """Unknown /api/ paths answer JSON, not an HTML page."""
    return _json({"error": f"no API endpoint {request.path}"}, status=404)
