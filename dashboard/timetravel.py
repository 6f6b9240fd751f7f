"""The time-travel page and its JSON API: a table at a version or time (paginated), its
history, and a comparison of two versions. Reads Delta with delta-rs (``dashboard.lake``), not
PostgreSQL and never Spark. Conventions as in ``views.py``: GET only, bad input -> 400
``{"error": "..."}``; a table delta-rs cannot read -> 422 ``{"error": "..."}`` with its message.
"""

from __future__ import annotations

import functools
import re

from django.views.decorators.http import require_GET

from dashboard import lake, params
from dashboard.params import BadParam
from dashboard.views import _json, _page, api

_VERSION = re.compile(r"^\d{1,9}$")


def _version(query, name: str) -> int | None:
    raw = query.get(name)
    if raw in (None, ""):
        return None
    if not _VERSION.match(raw):
        raise BadParam(f"{name} must be a version number (0 or more), got {raw!r}")
    return int(raw)


def _when(query):
    """as_of=ISO 8601 (naive: UTC); params' own range checks apply."""
    return params._timestamp(query, "as_of")


def readable(fn):
    """A table delta-rs cannot read answers 422 with delta-rs' message, not a 500."""
    @functools.wraps(fn)
    def view(request, *args, **kwargs):
        try:
            return fn(request, *args, **kwargs)
        except lake.Unreadable as e:
            return _json({"error": str(e)}, status=422)
    return view


@require_GET
def time_travel_page(request):
    return _page(request, "time_travel.html", "time-travel", time_based=False, page_size=50,
                 api={"tables": "/api/time-travel/tables", "history": "/api/time-travel/history",
                      "rows": "/api/time-travel/rows", "diff": "/api/time-travel/diff"})


@readable
@api()
def tables_api(request):
    """GET /api/time-travel/tables -- every table: exists, latest version, change data feed,
    readable by delta-rs (with its protocol) or the error."""
    return {"tables": lake.tables()}


@readable
@api("table", "limit", "offset")
def history_api(request):
    """GET /api/time-travel/history?table=&limit=&offset= -- versions newest first (operation,
    rows and files added/removed/updated) and the readable window."""
    limit, offset = params.page(request.GET)
    return lake.history(request.GET.get("table"), limit=limit, offset=offset)


@readable
@api("table", "version", "as_of", "limit", "offset")
def rows_api(request):
    """GET /api/time-travel/rows?table=&version=|as_of=&limit=&offset= -- a page of the table's
    rows at that version or time (default: latest), in key order."""
    q = request.GET
    version, as_of = _version(q, "version"), _when(q)
    if version is not None and as_of is not None:
        raise BadParam("give either version or as_of, not both")
    limit, offset = params.page(q)
    return lake.rows(q.get("table"), version=version, as_of=as_of, limit=limit, offset=offset)


@readable
@api("table", "from", "to", "limit")
def diff_api(request):
    """GET /api/time-travel/diff?table=&from=V1&to=V2&limit= -- rows inserted, deleted and
    updated (before and after) between two versions; counts, and up to limit rows per group."""
    q = request.GET
    v1, v2 = _version(q, "from"), _version(q, "to")
    if v1 is None or v2 is None:
        raise BadParam("from and to (two version numbers) are required")
    limit = params.integer(q, "limit", default=50, minimum=1, maximum=params.MAX_LIMIT)
    return lake.diff(q.get("table"), v1, v2, limit=limit)
