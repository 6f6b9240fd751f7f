"""Gold -> PostgreSQL: exact copies, exactly once, through failures."""

from __future__ import annotations

import psycopg2
import pytest

from lakehouse import storage
from lakehouse.stack import Postgres, writer_url
from serving import schema, sync
from tests.test_pipeline import lake, rows, simulate, table  # noqa: F401 (a fixture, used by name)

pytestmark = pytest.mark.integration


def served(settings) -> dict[str, list[tuple]]:
    out = {}
    with psycopg2.connect(writer_url(settings), options="-c timezone=UTC") as conn, conn.cursor() as cur:
        for t in schema.SERVED.values():
            cur.execute(f"SELECT {', '.join(t.column_names)} FROM {schema.serving_name(t)}")
            out[t.name] = sorted(cur.fetchall())
    return out


def gold(spark, settings) -> dict[str, list[tuple]]:
    return {name: rows(table(spark, settings, name)) for name in schema.SERVED}


def _normalise(tables: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    """PostgreSQL returns aware datetimes; Spark naive UTC ones."""
    return {name: sorted(tuple(v.replace(tzinfo=None) if hasattr(v, "tzinfo") and v is not None else v for v in r)
                         for r in rs) for name, rs in tables.items()}


class CommitFails:
    """A connection whose first commit fails, as if PostgreSQL went away mid-sync."""

    def __init__(self, conn):
        self.conn, self.failed = conn, False

    def cursor(self):
        return self.conn.cursor()

    def rollback(self):
        self.conn.rollback()

    def commit(self):
        if not self.failed:
            self.failed = True
            self.conn.rollback()
            raise psycopg2.OperationalError("connection lost (simulated)")
        self.conn.commit()


def test_a_sync_retried_after_a_failure_midway_changes_nothing(spark, lake, tmp_path):  # noqa: F811
    from lakehouse import pipeline

    simulate(lake, tmp_path, "--events", "300", "--seed", "21")
    assert pipeline.run(lake, available_now=True) == 0
    simulate(lake, tmp_path, "--events", "300", "--seed", "22")
    for query in pipeline.QUERIES:  # gold moves on, PostgreSQL not yet
        query.start(spark, lake, {"availableNow": True}, lambda *a: None).awaitTermination()
    before = served(lake)

    conn = sync.connect(lake)
    with pytest.raises(psycopg2.OperationalError):
        sync.sync_all(lake, CommitFails(conn))
    conn.close()
    assert served(lake) == before  # nothing half-written

    sync.sync_all(lake)
    assert _normalise(served(lake)) == _normalise(gold(spark, lake))
    assert all(v is None for v in sync.sync_all(lake).values())  # up to date: nothing more to copy


def test_postgres_stopped_and_restarted_mid_stream_loses_nothing(spark, lake, tmp_path):  # noqa: F811
    from lakehouse import pipeline

    simulate(lake, tmp_path, "--events", "300", "--seed", "31")
    pg = Postgres(lake)
    pg.stop()
    try:
        assert pipeline.run(lake, available_now=True) == 1  # tables done, the copy could not be made
    finally:
        pg.start()
    simulate(lake, tmp_path, "--events", "200", "--seed", "32")
    assert pipeline.run(lake, available_now=True) == 0  # catches up
    assert _normalise(served(lake)) == _normalise(gold(spark, lake))
    version = storage.version(spark, lake, "gold.status_by_location")
    with psycopg2.connect(writer_url(lake)) as conn, conn.cursor() as cur:
        cur.execute("SELECT delta_version FROM sync_state WHERE table_name = 'gold.status_by_location'")
        assert cur.fetchone()[0] == version
