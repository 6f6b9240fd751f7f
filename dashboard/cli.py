"""``lakehouse dashboard``: serve the dashboard with Django's threaded WSGI server.

The same server as ``runserver`` without its autoreloader; static files are served by the
app itself (see dashboard/urls.py). Stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from lakehouse.settings import ConfigError


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range (0-65535)")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=_port, default=8000, help="port to listen on (default 8000; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; another host name must be in DJANGO_ALLOWED_HOSTS)")


def setup() -> None:
    """Configure Django for the dashboard (idempotent)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    django.setup()


def make_server(host: str, port: int):
    """A threaded WSGI server bound to (host, port), serving the dashboard; not started yet."""
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    setup()
    ipv6 = ":" in host
    httpd = ThreadedWSGIServer((host.strip("[]"), port), WSGIRequestHandler, ipv6=ipv6)
    httpd.daemon_threads = True
    httpd.set_app(get_wsgi_application())
    return httpd


def _warnings() -> list[str]:
    """Problems worth a line at start-up; the server runs anyway."""
    from django.conf import settings
    from django.db import connection

    notes = []
    vendor = os.path.join(os.path.dirname(__file__), "static", "vendor")
    for asset in ("echarts/echarts.min.js", "pivottable/pivot.min.js", "flexmonster/flexmonster.full.js"):
        if not os.path.exists(os.path.join(vendor, asset)):
            notes.append(f"front-end asset {asset} is missing: run `make setup` (npm ci + copy to dashboard/static/vendor/)")
            break
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT to_regclass('public.server_state') IS NOT NULL")
            if not cur.fetchone()[0]:
                notes.append("the serving tables do not exist yet: start the pipeline to create and fill them")
    except Exception as e:  # noqa: BLE001 - any database problem is reported, not raised
        notes.append(f"cannot reach the serving database yet ({str(e).strip().splitlines()[0]}); pages will retry")
    finally:
        connection.close()
    if settings.DEBUG:
        notes.append("DJANGO_DEBUG=1: debug pages are on; never expose this server")
    return notes


def run(args: argparse.Namespace) -> int:
    try:
        httpd = make_server(args.host, args.port)  # a ConfigError goes to the caller (one line, exit 2)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port} ({e.strerror}); choose another --port", file=sys.stderr)
        return 2
    from django.conf import settings

    host, port = httpd.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    if args.host not in settings.ALLOWED_HOSTS and args.host not in ("0.0.0.0", "::"):
        print(f"note: {args.host} is not in DJANGO_ALLOWED_HOSTS ({','.join(settings.ALLOWED_HOSTS)}): "
              "requests by that name get HTTP 400", file=sys.stderr)
    for note in _warnings():
        print(f"note: {note}", file=sys.stderr)
    print(f"dashboard at http://{shown}:{port}/ (Ctrl-C stops it)", flush=True)

    def _stop(*_):
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    previous = signal.signal(signal.SIGTERM, _stop) if threading.current_thread() is threading.main_thread() else None
    try:
        httpd.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print("dashboard stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dashboard", description="Serve the monitoring dashboard.")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
