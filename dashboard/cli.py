"""``lakehouse dashboard``: serve the dashboard with waitress, a production WSGI server.

Not Django's development server: that one listens with a backlog of 10 (at 50 clients a
quarter of the connects waited 1 s for a SYN retry) and starts a thread per request; waitress
has a fixed pool of worker threads, each keeping its PostgreSQL connection (CONN_MAX_AGE).
Static files are served by the app itself (see dashboard/urls.py). Stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading

from lakehouse.settings import ConfigError

THREADS = 8  # worker threads, each with its own PostgreSQL connection; enough for cached answers on 2 cores
BACKLOG = 1024  # connections the kernel queues until accepted (capped by net.core.somaxconn): bursts wait, not retry


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


class Server:
    """waitress behind the socketserver interface the callers use: server_address,
    serve_forever(poll_interval), shutdown() from another thread, server_close()."""

    def __init__(self, server):
        self._server = server
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self.server_address = server.socket.getsockname()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """waitress' own loop, a turn at a time, so that shutdown() can end it between turns."""
        self._idle.clear()
        try:
            while not self._stop.is_set():
                # poll(), not select(): no limit of 1024 file descriptors
                self._server.asyncore.loop(timeout=poll_interval, map=self._server._map, use_poll=True, count=1)
        finally:
            self._idle.set()

    def shutdown(self) -> None:
        """Stop serve_forever and wait until it has returned."""
        self._stop.set()
        self._server.pull_trigger()  # wakes the poll at once
        self._idle.wait()

    def server_close(self) -> None:
        """Close the listening socket and open connections, then stop the worker threads."""
        self._server.asyncore.close_all(self._server._map)
        self._server.task_dispatcher.shutdown(timeout=5)


def make_server(host: str, port: int) -> Server:
    """The dashboard served by waitress on (host, port) (0: a free port); not started yet.

    The socket is bound here so that exactly the address given is served (waitress would serve
    every address a name resolves to), and a bad host or a busy port is an OSError to report."""
    import waitress
    from django.core.wsgi import get_wsgi_application

    setup()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        server = waitress.create_server(get_wsgi_application(), sockets=[sock], threads=THREADS, backlog=BACKLOG)
    except BaseException:
        sock.close()
        raise
    return Server(server)


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
