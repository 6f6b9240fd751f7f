"""URLs: pages, the JSON API under /api/, and static files.

Static files (our own and the npm assets in static/vendor/) are served by Django itself
through django.contrib.staticfiles' finders, also with DEBUG off: this is a local tool
without a separate web server, and the files are few. For a public deployment put a web
server or a CDN in front and run collectstatic instead.
"""

from django.contrib.staticfiles.views import serve as staticfiles_serve
from django.core.exceptions import SuspiciousFileOperation
from django.http import Http404
from django.urls import path, re_path

from dashboard import quality, timetravel, views

SERVER_ID = r"(?P<server_id>[\w.:@-]{1,200})"


def static_serve(request, path):
    """Files found by the staticfiles finders (dashboard/static/), whatever DEBUG says."""
    try:
        return staticfiles_serve(request, path, insecure=True)
    except SuspiciousFileOperation:  # a path out of the static folders: "../settings.py"
        raise Http404(path) from None


urlpatterns = [
    path("", views.overview_page, name="overview"),
    path("pivot/", views.pivot_page, name="pivot"),
    path("servers/", views.servers_page, name="servers"),
    re_path(rf"^servers/{SERVER_ID}/$", views.server_page, name="server"),
    path("incidents/", views.incidents_page, name="incidents"),
    path("pipeline/", views.pipeline_page, name="pipeline"),
    path("time-travel/", timetravel.time_travel_page, name="time-travel"),
    path("quality/", quality.quality_page, name="quality"),
    re_path(r"^quality/report/(?P<path>.*)$", quality.report_file),

    path("api/overview", views.overview_api),
    path("api/pivot", views.pivot_api),
    path("api/status-by-location", views.status_by_location_api),
    path("api/status-by-minute", views.status_by_minute_api),
    path("api/servers", views.servers_api),
    path("api/servers/facets", views.server_facets_api),
    re_path(rf"^api/servers/{SERVER_ID}$", views.server_api),
    path("api/incidents", views.incidents_api),
    path("api/pipeline", views.pipeline_api),
    path("api/time-travel/tables", timetravel.tables_api),
    path("api/time-travel/history", timetravel.history_api),
    path("api/time-travel/rows", timetravel.rows_api),
    path("api/time-travel/diff", timetravel.diff_api),
    path("api/quality", quality.quality_api),
    re_path(r"^api/", views.api_not_found),

    re_path(r"^static/(?P<path>.+)$", static_serve),
]
