"""The pivot report, defined once: rows, columns, measures over status_by_location.

``definition()`` is sent to the pivot page as JSON; dashboard/static/dashboard/pivot.js
turns the same definition into a PivotTable.js configuration (the default, keyless
renderer) or a Flexmonster report (when FLEXMONSTER_LICENSE_KEY is set). Field names are
the serving table's columns; captions are for people.
"""

from __future__ import annotations

import os

STATUS_ORDER = ["Red", "Orange", "Green"]

REPORT = {
    "title": "Events by city and status",
    "source": "status_by_location",
    "fields": [
        {"name": "country_code", "caption": "Country code", "type": "string"},
        {"name": "country_name", "caption": "Country", "type": "string"},
        {"name": "city", "caption": "City", "type": "string"},
        {"name": "status_color", "caption": "Status", "type": "string", "order": STATUS_ORDER},
        {"name": "severity_level", "caption": "Severity", "type": "string"},
        {"name": "event_count", "caption": "Events", "type": "number"},
        {"name": "total_estimated_resolution_time", "caption": "Total est. resolution time (min)", "type": "number"},
    ],
    "rows": ["city"],
    "columns": ["status_color"],
    "measures": [
        {"field": "event_count", "aggregation": "sum", "caption": "Events"},
        {"field": "total_estimated_resolution_time", "aggregation": "sum", "caption": "Total est. resolution time (min)"},
    ],
}


def flexmonster_license_key() -> str | None:
    """FLEXMONSTER_LICENSE_KEY, read on each request (never stored in the repository)."""
    return (os.environ.get("FLEXMONSTER_LICENSE_KEY") or "").strip() or None


def renderer() -> str:
    """'flexmonster' when a licence key is set, else the keyless 'pivottable' (PivotTable.js)."""
    return "flexmonster" if flexmonster_license_key() else "pivottable"


def definition() -> dict:
    return REPORT
