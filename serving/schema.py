"""The PostgreSQL serving schema, owned here and derived from the gold declarations.

Every gold table marked ``serve=True`` in ``lakehouse.tables`` becomes a PostgreSQL table
of the same name (without the layer) and columns, keyed by its declared keys. Two
bookkeeping tables sit beside them: ``sync_state`` (the per-table high-water mark that
makes the sync exactly-once) and ``pipeline_batches`` (one row per micro-batch per layer and
streaming query, for the dashboard's pipeline page). ``quality_results`` (every Great Expectations
validation, as in the Delta table quality.results) and ``quality_quarantine`` (quarantined
records per rule, with a few recent samples) are written by ``lakehouse/quality.py`` for the
dashboard's data-quality page. ``apply()`` is idempotent; it runs with the writer role.
"""

from __future__ import annotations

from lakehouse.tables import TABLES, Table

PG_TYPES = {"STRING": "text", "INT": "integer", "BIGINT": "bigint", "DOUBLE": "double precision",
            "TIMESTAMP": "timestamptz", "BOOLEAN": "boolean", "DATE": "date"}

SERVED: dict[str, Table] = {t.name: t for t in TABLES.values() if t.serve}

BOOKKEEPING_DDL = """
CREATE TABLE IF NOT EXISTS sync_state (
    table_name text PRIMARY KEY,
    table_id text NOT NULL,
    delta_version bigint NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pipeline_batches (
    layer text NOT NULL,
    query_id text NOT NULL,
    batch_id bigint NOT NULL,
    rows_in bigint NOT NULL,
    rows_out bigint NOT NULL,
    quarantined bigint NOT NULL DEFAULT 0,
    duplicates_dropped bigint NOT NULL DEFAULT 0,
    duration_ms bigint NOT NULL,
    kafka_lag bigint,
    table_version bigint,
    finished_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (layer, query_id, batch_id)
);
CREATE TABLE IF NOT EXISTS quality_results (
    validation_id text NOT NULL,
    validated_at timestamptz NOT NULL,
    suite text NOT NULL,
    table_name text NOT NULL,
    delta_version bigint,
    batch_id bigint,
    rule text NOT NULL,
    policy text NOT NULL,
    expectation text NOT NULL,
    success boolean NOT NULL,
    observed_value text,
    element_count bigint,
    unexpected_count bigint,
    unexpected_percent double precision,
    sample_rows text,
    reason text,
    PRIMARY KEY (validation_id, rule, expectation)
);
CREATE INDEX IF NOT EXISTS quality_results_validated_at ON quality_results (validated_at);
CREATE TABLE IF NOT EXISTS quality_quarantine (
    rule text PRIMARY KEY,
    quarantined bigint NOT NULL,
    last_quarantined_at timestamptz,
    samples text NOT NULL DEFAULT '[]',
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""


def serving_name(table: Table) -> str:
    """gold.status_by_location -> status_by_location"""
    return table.name.split(".", 1)[1]


def table_ddl(table: Table) -> str:
    cols = ",\n    ".join(f"{name} {PG_TYPES[typ]}" for name, typ, _ in table.columns)
    return (f"CREATE TABLE IF NOT EXISTS {serving_name(table)} (\n    {cols},\n"
            f"    PRIMARY KEY ({', '.join(table.keys)})\n);")


def ddl() -> str:
    return "\n".join([table_ddl(t) for t in SERVED.values()] + [BOOKKEEPING_DDL])


def apply(conn) -> None:
    """Create whatever is missing (psycopg2 connection, writer role)."""
    with conn.cursor() as cur:
        cur.execute(ddl())
    conn.commit()
