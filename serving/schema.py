"""The PostgreSQL serving schema, owned here and derived from the gold declarations.

Every gold table marked ``serve=True`` in ``lakehouse.tables`` becomes a PostgreSQL table
of the same name (without the layer) and columns, keyed by its declared keys. Two
bookkeeping tables sit beside them: ``sync_state`` (the per-table high-water mark that
makes the sync exactly-once) and ``pipeline_batches`` (one row per micro-batch per layer and
streaming query, for the dashboard's pipeline page). ``apply()`` is idempotent; it runs with the writer role.
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
