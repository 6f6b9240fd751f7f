"""The ``lakehouse`` command: one entry point, one subcommand per job.

Handlers import their engines lazily so ``lakehouse --help`` and ``stack status`` stay fast.
A ConfigError (bad setting, missing service) prints one line and exits 2, never a trace.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from lakehouse import logs
from lakehouse.settings import ConfigError, get_settings


def _stack_up(args: argparse.Namespace) -> int:
    from lakehouse import stack

    settings = get_settings()
    started = time.monotonic()
    stack.up(settings)
    code = _print_status(settings)
    print(f"stack up in {time.monotonic() - started:.1f}s (state in {settings.home})")
    return code


def _print_status(settings) -> int:
    from lakehouse import stack

    rows = stack.status(settings)
    for name, address, ok in rows:
        print(f"{name:<9} {address:<40} {'up' if ok else 'DOWN'}")
    return 0 if all(ok for _, _, ok in rows) else 1


def _stack_status(args: argparse.Namespace) -> int:
    return _print_status(get_settings())


def _stack_down(args: argparse.Namespace) -> int:
    from lakehouse import stack

    stack.down(get_settings())
    print("stack stopped")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from simulator.cli import run

    return run(args)


def _up(args: argparse.Namespace) -> int:
    from lakehouse import up

    return up.run(get_settings(), rate=args.rate, port=args.port)


def _stream(args: argparse.Namespace) -> int:
    from lakehouse import pipeline

    settings = get_settings()
    if args.trigger is not None:
        os.environ["LAKEHOUSE_TRIGGER_SECONDS"] = str(args.trigger)
        settings = get_settings()
    return pipeline.run(settings, available_now=args.available_now)


def _replay(args: argparse.Namespace) -> int:
    from lakehouse import pipeline

    figures = pipeline.replay(get_settings())
    print(f"replayed bronze version {figures['bronze_version']}: {figures['rows_in']} records -> "
          f"{figures['rows_out']} silver events; gold rebuilt")
    return 0


def _sync(args: argparse.Namespace) -> int:
    from serving import sync

    settings = get_settings()
    for table, rows in sync.sync_all(settings).items():
        print(f"{table:<28} {'up to date' if rows is None else f'{rows} rows written'}")
    return 0


def _tables(args: argparse.Namespace) -> int:
    from lakehouse import inspect
    from lakehouse.spark import get_spark

    settings = get_settings()
    inspect.render(inspect.tables(get_spark("lakehouse-cli", settings), settings), args.format)
    return 0


def _query(args: argparse.Namespace) -> int:
    from lakehouse import inspect, storage
    from lakehouse.spark import get_spark

    settings = get_settings()
    storage.table_for(args.table)
    if args.version is not None and args.version < 0:
        raise ConfigError(f"version must be 0 or more, got {args.version}")
    df = inspect.snapshot(get_spark("lakehouse-cli", settings), settings, args.table,
                          version=args.version, as_of=args.as_of)
    rows = [r.asDict(recursive=True) for r in (df.limit(args.limit) if args.limit else df).collect()]
    inspect.render(rows, args.format)
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from dashboard.cli import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lakehouse", description="Streaming lakehouse for data-center server monitoring.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    everything = sub.add_parser("up", help="run everything in the foreground: stack, simulator, pipeline, dashboard",
                                description="What `make stream` runs. Prints the dashboard's URL; Ctrl-C stops it all.")
    everything.add_argument("--rate", type=float, default=float(os.environ.get("LAKEHOUSE_SIM_RATE") or 20),
                            help="simulated events per second (default $LAKEHOUSE_SIM_RATE, else 20)")
    everything.add_argument("--port", type=int, default=int(os.environ.get("DASHBOARD_PORT") or 8000),
                            help="dashboard port (default $DASHBOARD_PORT, else 8000)")
    everything.set_defaults(func=_up)

    stack_p = sub.add_parser("stack", help="start, check and stop the local Kafka and PostgreSQL",
                             description="The local stack: Kafka (KRaft) and PostgreSQL, state under $LAKEHOUSE_HOME.")
    stack_sub = stack_p.add_subparsers(dest="action", required=True, metavar="ACTION")
    stack_sub.add_parser("up", help="start Kafka and PostgreSQL (harmless when already up)").set_defaults(func=_stack_up)
    stack_sub.add_parser("status", help="exit 0 only when every service answers").set_defaults(func=_stack_status)
    stack_sub.add_parser("down", help="stop what `up` started").set_defaults(func=_stack_down)

    from simulator.cli import add_arguments

    sim = sub.add_parser("simulate", help="stream simulated server status events into Kafka",
                         description="A data-center fleet streaming status events, with fault injection.")
    add_arguments(sim)
    sim.set_defaults(func=_simulate)

    st = sub.add_parser("stream", help="run bronze, silver and gold continuously (Ctrl-C stops between batches)",
                        description="Kafka -> bronze -> silver -> gold -> PostgreSQL, in one Spark application.")
    st.add_argument("--available-now", action="store_true", help="process everything available, then exit 0")
    st.add_argument("--trigger", type=float, metavar="SECONDS", help="micro-batch interval (default $LAKEHOUSE_TRIGGER_SECONDS)")
    st.set_defaults(func=_stream)
    sub.add_parser("replay", help="rebuild silver and gold from bronze (new table versions)",
                   description="Rebuild silver and gold from the bronze event log. Stop `lakehouse stream` first; "
                               "it resumes after the replay.").set_defaults(func=_replay)
    sub.add_parser("sync", help="copy gold to PostgreSQL once (incremental, exactly once)").set_defaults(func=_sync)
    tb = sub.add_parser("tables", help="list the tables with their current version and row count")
    tb.add_argument("--format", choices=("table", "json", "csv"), default="table")
    tb.set_defaults(func=_tables)
    q = sub.add_parser("query", help="print a table's rows, now or at a past version or time")
    q.add_argument("table", help="e.g. gold.status_by_location")
    when = q.add_mutually_exclusive_group()
    when.add_argument("--version", type=int, help="read the table as of this version")
    when.add_argument("--as-of", metavar="TIMESTAMP", help="read the table as of this time (ISO 8601, UTC unless given)")
    q.add_argument("--limit", type=int, default=100, help="at most this many rows (0: all; default 100)")
    q.add_argument("--format", choices=("table", "json", "csv"), default="table")
    q.set_defaults(func=_query)

    from lakehouse import bench, quality, timetravel

    timetravel.add_commands(sub)
    quality.add_commands(sub)

    from dashboard.cli import add_arguments as dashboard_arguments

    dash = sub.add_parser("dashboard", help="serve the Django dashboard (reads PostgreSQL with the read-only role)",
                          description="The live dashboard: overview, pivot, servers, incidents, pipeline.")
    dashboard_arguments(dash)
    dash.set_defaults(func=_dashboard)
    bench.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        logs.configure(get_settings().log_level)
        return args.func(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
