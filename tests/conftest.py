"""Shared fixtures: one Spark session and one real stack per test session.

The stack runs on free ports in a temporary LAKEHOUSE_HOME, so tests never collide with
a running `make stream`.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

# A copy of the original project's sample messages (../shared/seed/), kept with the tests.
SEED_DIR = Path(__file__).resolve().parent / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_env(home: Path) -> dict[str, str]:
    """Environment for a private stack in `home` on free ports."""
    return {
        "LAKEHOUSE_HOME": str(home),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "KAFKA_CONTROLLER_PORT": str(free_port()),
        "LAKEHOUSE_PG_PORT": str(free_port()),
    }


def make_home() -> Path:
    # PostgreSQL runs as a non-root user when we are root: its folder must be reachable.
    home = Path(tempfile.mkdtemp(prefix="lakehouse-test-"))
    home.chmod(0o755)
    return home


@dataclass
class Stack:
    home: Path
    env: dict[str, str]

    @property
    def settings(self):
        from lakehouse.settings import get_settings

        return get_settings()


@pytest.fixture(scope="session")
def stack():
    """A real Kafka broker and PostgreSQL server for the whole session."""
    from lakehouse import stack as stack_mod
    from lakehouse.settings import get_settings

    home = make_home()
    env = stack_env(home)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.pop("DATABASE_URL", None)
    os.environ.update(env)
    try:
        stack_mod.up(get_settings())
        yield Stack(home, env)
    finally:
        stack_mod.down(get_settings())
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def spark():
    """One Spark session for all tests, tuned for speed: UI off, few shuffle partitions."""
    from lakehouse.spark import get_spark

    session = get_spark("lakehouse-tests", **{"spark.sql.shuffle.partitions": "2",
                                              "spark.default.parallelism": "2",
                                              "spark.ui.enabled": "false"})
    yield session
    session.stop()
