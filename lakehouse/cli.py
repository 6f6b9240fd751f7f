"""The ``lakehouse`` command: one entry point, one subcommand per job.

Handlers import their engines lazily so ``lakehouse --help`` and ``stack status`` stay fast.
A ConfigError (bad setting, missing service) prints one line and exits 2, never a trace.
"""

from __future__ import annotations

import argparse
import signal
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
    if args.foreground:
        _wait_for_signal()
        stack.down(settings)
        print("stack stopped")
    return code


def _wait_for_signal() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("press Ctrl-C to stop", flush=True)
    try:
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lakehouse", description="Streaming lakehouse for data-center server monitoring.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stack_p = sub.add_parser("stack", help="start, check and stop the local Kafka and PostgreSQL",
                             description="The local stack: Kafka (KRaft) and PostgreSQL, state under $LAKEHOUSE_HOME.")
    stack_sub = stack_p.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = stack_sub.add_parser("up", help="start Kafka and PostgreSQL (harmless when already up)")
    up.add_argument("--foreground", action="store_true", help="stay in the foreground and stop the stack on Ctrl-C")
    up.set_defaults(func=_stack_up)
    stack_sub.add_parser("status", help="exit 0 only when every service answers").set_defaults(func=_stack_status)
    stack_sub.add_parser("down", help="stop what `up` started").set_defaults(func=_stack_down)

    from simulator.cli import add_arguments

    sim = sub.add_parser("simulate", help="stream simulated server status events into Kafka",
                         description="A data-center fleet streaming status events, with fault injection.")
    add_arguments(sim)
    sim.set_defaults(func=_simulate)
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
