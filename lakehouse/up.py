"""``lakehouse up`` (what ``make stream`` runs): the whole product in the foreground.

Starts the stack, then the simulator, the pipeline and the dashboard as child processes,
prints the dashboard's URL, and on Ctrl-C (or SIGTERM) stops the children (the pipeline
between batches), then the stack, unless the stack was already up before. If a child dies, everything stops with its name.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request

from lakehouse import stack
from lakehouse.settings import ConfigError, Settings

STOP_TIMEOUT_S = 90


def _child(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lakehouse.cli", *args], stdin=subprocess.DEVNULL)


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"the dashboard exited at start-up (code {proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise ConfigError(f"the dashboard did not answer at {url} within {timeout:.0f}s")


def run(settings: Settings, *, rate: float, port: int) -> int:
    already_up = {name for name, _, ok in stack.status(settings) if ok}
    stack.up(settings)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    children: dict[str, subprocess.Popen] = {}
    code = 0
    try:
        children["dashboard"] = _child("dashboard", "--port", str(port))
        children["pipeline"] = _child("stream")
        # A new seed each time: the same seed would send the same event ids again, which
        # silver rightly quarantines as duplicates.
        children["simulator"] = _child("simulate", "--forever", "--rate", str(rate), "--seed", str(time.time_ns()))
        url = f"http://127.0.0.1:{port}/"
        _wait_http(url, children["dashboard"])
        print(f"\n  dashboard: {url}\n  simulator: {rate:g} events/s into {settings.kafka_topic}; "
              f"Ctrl-C stops everything\n", flush=True)
        while not stopping:
            for name, proc in children.items():
                if proc.poll() is not None:
                    print(f"error: the {name} stopped (exit code {proc.returncode}); stopping everything",
                          file=sys.stderr)
                    stopping.append(1)
                    code = 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abandon the children
        print("stopping...", flush=True)
        for name in ("simulator", "pipeline", "dashboard"):  # upstream first
            proc = children.get(name)
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in children.values():
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
        if already_up:
            print(f"left running what was already up: {', '.join(sorted(already_up))} (`lakehouse stack down`)")
        else:
            stack.down(settings)
        print("stopped")
    return code
