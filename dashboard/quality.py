"""The data-quality page, its JSON API, and the offline report of ``lakehouse dq report``.

The page reads ``quality_results`` and ``quality_quarantine`` (written by lakehouse/quality.py
with the writer role) through the selectors, like every other page. The report is the
folder ``$LAKEHOUSE_HOME/dq-report``, served read-only under ``/quality/report/``: only
regular files inside that folder, nothing else. Data Docs pages carry inline scripts and
styles, so each page gets its own Content-Security-Policy: still 'self' only for every
source, with the sha256 of the page's own inline scripts and click handlers, and inline
styles. Conventions as in ``views.py``: GET only, bad input -> 400 ``{"error": "..."}``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import mimetypes
import re
from pathlib import Path

from django.http import FileResponse, HttpResponseNotFound
from django.views.decorators.http import require_GET

from dashboard import params, selectors
from dashboard.params import BadParam
from dashboard.views import _page, api

REPORT_URL = "/quality/report/"
MIME = {".woff2": "font/woff2", ".woff": "font/woff", ".ttf": "font/ttf", ".otf": "font/otf", ".svg": "image/svg+xml",
        ".css": "text/css", ".js": "text/javascript", ".html": "text/html", ".json": "application/json",
        ".txt": "text/plain", ".ico": "image/x-icon", ".png": "image/png", ".gif": "image/gif"}
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\ssrc\s*=)[^>]*>(.*?)</script\s*>", re.S | re.I)
_ONCLICK = re.compile(r"""\sonclick\s*=\s*"([^"]*)\"""", re.I)


def report_dir() -> Path:
    from lakehouse.settings import get_settings

    return get_settings().home / "dq-report"


@functools.lru_cache(maxsize=1)
def _names() -> tuple[frozenset, frozenset]:
    """Known table names and rule/check names: a filter must name one of them."""
    from lakehouse.rules import CHECKS, DUPLICATE_RULE, RULES
    from lakehouse.tables import TABLES

    return frozenset(TABLES), frozenset(x.name for x in (*RULES, DUPLICATE_RULE, *CHECKS))


def _known(query, name: str, known: frozenset) -> str | None:
    raw = params._get(query, name)
    if raw is None:
        return None
    if raw not in known:
        raise BadParam(f"{name} must be one of {', '.join(sorted(known))}, got {raw!r}")
    return raw


def _parsed(text):
    if text in (None, ""):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _report_info() -> dict:
    index = report_dir() / "index.html"
    if not index.is_file():
        return {"available": False, "url": REPORT_URL, "built_at": None}
    from datetime import UTC, datetime

    return {"available": True, "url": REPORT_URL,
            "built_at": datetime.fromtimestamp(index.stat().st_mtime, UTC)}


@require_GET
def quality_page(request):
    tables, rules = _names()
    return _page(request, "quality.html", "quality", api="/api/quality", time_based=True, page_size=20,
                 tables=sorted(tables), rules=sorted(rules), report_url=REPORT_URL)


@api(*params.TIME_PARAMS, "table", "rule", "limit", "offset")
def quality_api(request):
    """GET /api/quality?range=|from=&to=&table=&rule=&limit=&offset= -- totals and pass rate in
    the range; the latest validation of each table and rule; pass rates over time per layer;
    failed expectations in the range (paginated, with sample rows); quarantine counts per rule
    with samples; where the offline report is."""
    q = request.GET
    window = params.time_range(q)
    tables, rules = _names()
    table, rule = _known(q, "table", tables), _known(q, "rule", rules)
    limit, offset = params.page(q, default_limit=20)
    since, until = window.since, window.until
    failures = selectors.quality_failures(since=since, until=until, table=table, rule=rule, limit=limit, offset=offset)
    for r in failures["rows"]:
        r["sample_rows"], r["observed_value"] = _parsed(r["sample_rows"]), _parsed(r["observed_value"])
    quarantine = selectors.quality_quarantine()
    for r in quarantine:
        r["samples"] = _parsed(r["samples"]) or []
    return {
        "range": window.as_json(),
        "filters": {"table": table, "rule": rule},
        "totals": selectors.quality_totals(since=since, until=until, table=table, rule=rule),
        "latest": selectors.quality_latest(table=table, rule=rule),
        "pass_rates": selectors.quality_pass_rates(since=since, until=until, table=table, rule=rule),
        "failures": failures,
        "quarantine": quarantine,
        "report": _report_info(),
    }


def report_csp(page: str) -> str:
    """'self' only, plus the hashes of this page's own inline scripts and click handlers."""
    sources = [*_INLINE_SCRIPT.findall(page), *(html.unescape(h) for h in _ONCLICK.findall(page))]
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode('utf-8')).digest()).decode()}'"
                      for s in dict.fromkeys(sources))
    return ("default-src 'self'; script-src 'self' 'unsafe-hashes' " + hashes + "; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
            "form-action 'self'; frame-ancestors 'self'")


@require_GET
def report_file(request, path: str = ""):
    """A file of the report folder; 404 for anything else (no listing, nothing outside it)."""
    root = report_dir().resolve()
    relative = path or "index.html"
    if relative.endswith("/"):
        relative += "index.html"
    missing = HttpResponseNotFound("No such file in the data-quality report. Build the report with "
                                   "`lakehouse dq report`.\n", content_type="text/plain; charset=utf-8")
    if "\x00" in relative or "\\" in relative or len(relative) > 500:
        return missing
    try:
        target = (root / relative).resolve()
    except (OSError, RuntimeError):
        return missing
    if not target.is_relative_to(root) or not target.is_file():
        return missing
    content_type = MIME.get(target.suffix.lower()) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if content_type.startswith("text/"):
        content_type += "; charset=utf-8"
    response = FileResponse(target.open("rb"), content_type=content_type)
    if target.suffix.lower() == ".html":
        response["Content-Security-Policy"] = report_csp(target.read_text(encoding="utf-8", errors="replace"))
    response["Cache-Control"] = "no-cache"
    return response
