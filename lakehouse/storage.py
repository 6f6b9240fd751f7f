"""Delta tables on disk: create them from their declarations, write to them exactly once.

Writes inside ``foreachBatch`` carry a transaction id (application id + batch id): when
Spark re-runs a batch after a crash, Delta sees the id already committed and skips the
write. The application id names the table and the streaming query's id, which lives in
its checkpoint: batch ids start again at 0 with a new checkpoint (after a replay), and so
does the application id. On a local disk the stream's writes (``append_once``, ``merge_once``)
are delta-rs's, with the id in its commit properties; Spark's cost ~0.4-1.8 s per commit
here, mostly fixed. Elsewhere (HDFS) appends use Spark's writer options
``txnAppId``/``txnVersion`` and MERGE the session settings of the same name.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.settings import ConfigError, Settings, is_local, local_location
from lakehouse.tables import TABLES, Table

TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"

PROPERTIES = {
    "delta.autoOptimize.optimizeWrite": "true",
    "delta.autoOptimize.autoCompact": "true",
}
CHANGE_FEED = {"delta.enableChangeDataFeed": "true"}


def table_for(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise ConfigError(f"unknown table {name!r}; tables: {', '.join(TABLES)}") from None


def ensure_tables(spark: SparkSession, settings: Settings) -> None:
    """Create every declared table that does not exist yet (idempotent)."""
    for table in TABLES.values():
        props = {**PROPERTIES, **(CHANGE_FEED if table.layer == "gold" else {})}
        partition = f"PARTITIONED BY ({', '.join(table.partition_by)})" if table.partition_by else ""
        tblprops = ", ".join(f"'{k}' = '{v}'" for k, v in props.items())
        spark.sql(f"CREATE TABLE IF NOT EXISTS delta.`{settings.table_path(table.name)}` ({table.ddl}) "
                  f"USING DELTA {partition} TBLPROPERTIES ({tblprops})")


def read(spark: SparkSession, settings: Settings, name: str, version: int | None = None) -> DataFrame:
    """A table with Spark, as of ``version`` (default: the latest)."""
    reader = spark.read.format("delta")
    return (reader if version is None else reader.option("versionAsOf", version)).load(settings.table_path(name))


def read_small(spark: SparkSession, settings: Settings, name: str, equals: tuple[str, object] | None = None,
               version: int | None = None) -> DataFrame:
    """A table small by its grain (gold's one row per server, its open incidents), with an
    optional ``(column, value)`` equality filter, as of ``version`` (default: the latest): on a
    local disk read by delta-rs and handed to Spark as a local relation. A Spark scan of a
    small Delta table costs ~0.4 s here (snapshot, file index, scan tasks), and ~0.5-0.7 s at
    an older version (its snapshot is rebuilt by a Spark job); this, ~0.05 s. Elsewhere, a
    Spark read."""
    location = settings.table_path(name)
    if not is_local(location):
        df = read(spark, settings, name, version)
        return df.where(F.col(equals[0]) == F.lit(equals[1])) if equals else df
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    # Filtered after the read: delta-rs's file pruning drops every file Spark wrote when
    # filtering on a boolean (Spark keeps no min/max for booleans), so a pushed-down
    # ``is_open = true`` found no rows after a replay.
    rows = DeltaTable(local_location(location), version=version).to_pyarrow_table()
    rows = rows.filter(pc.equal(rows[equals[0]], equals[1])) if equals else rows
    return spark.createDataFrame(rows)


def query_id(spark: SparkSession, settings: Settings, query: str) -> str:
    """The id of a streaming query, as written in its checkpoint when it first started (one
    line of JSON: read directly on a local disk, where a Spark read of it took ~0.1 s)."""
    metadata = settings.checkpoint_path(query) + "/metadata"
    if is_local(metadata):
        return json.loads(Path(local_location(metadata)).read_text().splitlines()[0])["id"]
    return spark.read.json(metadata).first()["id"]


def append_once(df: DataFrame, settings: Settings, name: str, writer: str, batch_id: int,
                app_id: str | None = None) -> None:
    """Append, skipped if ``writer`` (a query id) already committed this batch id to this table
    (as the transaction id ``app_id``, by default ``<table>/<writer>``).

    On a local disk the append is delta-rs's, of the rows collected as Arrow (each caller
    appends one micro-batch's rows): a Spark append costs 0.4-1.8 s per commit
    here, mostly fixed. delta-rs runs no auto compaction, so ``compact_small_files`` follows.
    Elsewhere (HDFS) Spark writes, with the transaction id as writer options."""
    location = settings.table_path(name)
    app_id = app_id or f"{name}/{writer}"
    if not is_local(location):
        (df.write.format("delta").mode("append")
         .option("txnAppId", app_id).option("txnVersion", batch_id)
         .save(location))
        return
    from deltalake import DeltaTable, write_deltalake
    from deltalake.transaction import CommitProperties, Transaction

    target = DeltaTable(local_location(location))
    if _done(target, app_id, batch_id):
        return
    write_deltalake(target, df.toArrow(), mode="append",
                    commit_properties=CommitProperties(app_transactions=[Transaction(app_id, batch_id)]))
    compact_small_files(target)


def _done(target, app_id: str, batch_id: int) -> bool:
    done = target.transaction_version(app_id)
    return done is not None and done >= batch_id


def may_hold(settings: Settings, name: str, writer: str, batch_id: int) -> bool:
    """Whether ``writer``'s append of this batch id to the table may have committed: read from
    the Delta log by delta-rs on a local disk; elsewhere always True (no cheap way to ask)."""
    location = settings.table_path(name)
    if not is_local(location):
        return True
    from deltalake import DeltaTable

    return _done(DeltaTable(local_location(location)), f"{name}/{writer}", batch_id)


# Per local table and column: each data file's (key, time) pairs, read once; see ``find_keys``.
_KEY_FILES: dict[tuple[str, str, str], dict[str, tuple[object, object]]] = {}


_KEY_LOCK = threading.Lock()  # silver's micro-batches and the data-quality monitor share the copy


def find_keys(settings: Settings, name: str, keys, *, column: str, time_column: str, since) -> list[str]:
    """Which of ``keys`` (an Arrow array) the table, on a local disk, holds in ``column``, in
    rows whose ``time_column`` is at or after ``since`` (a UTC datetime): see ``key_rows``."""
    return sorted(set(key_rows(settings, name, keys, column=column, time_column=time_column,
                               since=since)[column].to_pylist()))


def key_rows(settings: Settings, name: str, keys, *, column: str, time_column: str, since):
    """The rows (``column``, ``time_column``, as Arrow) of the table, on a local disk, whose
    ``column`` is one of ``keys`` (an Arrow array) and whose ``time_column`` is at or after
    ``since`` (a UTC datetime).

    The two columns are kept in memory file by file, in step with the table's snapshot: a
    file new to it is read once (its rows since ``since``), a file it no longer has (compacted,
    restored away, overwritten) is dropped, so the answer is always the snapshot's. Silver's
    de-duplication asks every batch: a Spark scan of every key in the horizon cost 0.6-2.9 s
    per batch on a 1M-row silver (measured, idle and under load), and grows with the table;
    this looks up the batch's keys in memory, ~60 bytes per key in the horizon. A file whose
    newest row falls out of the horizon is emptied."""
    location = settings.table_path(name)
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    since = pa.scalar(since, pa.timestamp("us", tz="UTC"))
    with _KEY_LOCK:
        files = _KEY_FILES.setdefault((local_location(location), column, time_column), {})
        snapshot = set(DeltaTable(local_location(location)).file_uris())
        for gone in files.keys() - snapshot:
            del files[gone]
        for uri in snapshot - files.keys():
            part = read_arrow([uri], [column, time_column])
            part = part.filter(pc.greater_equal(part[time_column], since))
            files[uri] = (part, pc.max(part[time_column]))
        found = []
        for uri, (part, newest) in files.items():
            if not newest.is_valid or newest.as_py() < since.as_py():
                files[uri] = (part.slice(0, 0), newest)  # nothing of it is in the horizon any more
                continue
            found.append(part.filter(pc.and_(pc.is_in(part[column], value_set=keys),
                                             pc.greater_equal(part[time_column], since))))
    schema = pa.schema([(column, pa.string()), (time_column, pa.timestamp("us", tz="UTC"))])
    return pa.concat_tables([t.cast(schema) for t in found]) if found else schema.empty_table()


def read_arrow(files: list[str], columns: list[str]):
    """``columns`` of some local data files (``new_files``' URIs) as one Arrow table, timestamps
    as UTC microseconds (Spark writes INT96, read as naive nanoseconds in UTC; delta-rs UTC
    micros); a column a file lacks is null there (an older schema)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = []
    for uri in files:
        file = pq.ParquetFile(local_location(uri))
        part = file.read(columns=[c for c in columns if c in file.schema_arrow.names])
        for i, field in enumerate(part.schema):
            if pa.types.is_timestamp(field.type):
                part = part.set_column(i, field.name, part[field.name].cast(pa.timestamp("us", tz="UTC"), safe=False))
        parts.append(part)
    if not parts:
        return pa.table({})
    return pa.concat_tables(parts, promote_options="default")


SMALL_FILE_BYTES = 16 * 1024 * 1024
COMPACT_AT_FILES = 50  # Delta's own auto compaction waits for 50 small files too (minNumFiles)


def compact_small_files(target) -> None:
    """delta-rs's compaction of a local table (a ``deltalake.DeltaTable``), once it holds
    ``COMPACT_AT_FILES`` files under ``SMALL_FILE_BYTES``: what Spark's auto compaction does
    after its own writes. The commit changes no data (Delta streaming sources skip it).
    ``target`` is the table just written to: ``write_deltalake`` left it at its new version."""
    sizes = target.get_add_actions(flatten=True).column("size_bytes").to_pylist()
    if sum(1 for size in sizes if size < SMALL_FILE_BYTES) >= COMPACT_AT_FILES:
        target.optimize.compact()


@contextmanager
def once(spark: SparkSession, name: str, writer: str, batch_id: int, conf: dict[str, str] | None = None):
    """Make the Delta DML inside (MERGE, UPDATE, DELETE) idempotent for ``writer``'s batch id
    (and set ``conf`` for it)."""
    values = {TXN_APP_ID: f"{name}/{writer}", TXN_VERSION: str(batch_id), **(conf or {})}
    for key, value in values.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key in values:
            spark.conf.unset(key)


MERGE_CONF = {
    # MERGE's sources here are materialized or computed from a checkpointed batch: deterministic,
    # so Delta need not copy them first (its default copies every source that is not a table scan).
    "spark.databricks.delta.merge.materializeSource": "none",
}


def merge_once(source: DataFrame, settings: Settings, table: Table, writer: str, batch_id: int,
               update: dict[str, str] | None = None) -> None:
    """Upsert ``source`` into ``table`` on its keys: matched rows get ``update`` (SQL over ``t``,
    the table, and ``s``, the source; default: every column from ``s``), others are inserted.
    Skipped if ``writer`` already committed this batch id to the table.

    On a local disk the MERGE is delta-rs's, on the source collected as Arrow: gold's sources
    are small (a batch's aggregates and touched servers), and a Spark MERGE costs ~1.1 s per
    commit here whatever its size (measured on a 12-row source, with and without change data
    feed, optimized writes and auto compaction), against ~0.05 s. Both write the same Delta
    log (the transaction id included), so either can continue the other's table. Elsewhere
    (HDFS) it is Spark's MERGE."""
    location = settings.table_path(table.name)
    app_id = f"{table.name}/{writer}"
    on = " AND ".join(f"t.{k} = s.{k}" for k in table.keys)
    if not is_local(location):
        from delta.tables import DeltaTable

        merge = DeltaTable.forPath(source.sparkSession, location).alias("t").merge(source.alias("s"), on)
        merge = merge.whenMatchedUpdate(set=update) if update else merge.whenMatchedUpdateAll()
        with once(source.sparkSession, table.name, writer, batch_id, MERGE_CONF):
            merge.whenNotMatchedInsertAll().execute()
        return
    from deltalake import DeltaTable
    from deltalake.transaction import CommitProperties, Transaction

    target = DeltaTable(local_location(location))
    if _done(target, app_id, batch_id):
        return
    merge = target.merge(source.toArrow(), on, source_alias="s", target_alias="t",
                         commit_properties=CommitProperties(app_transactions=[Transaction(app_id, batch_id)]))
    merge = merge.when_matched_update(update) if update else merge.when_matched_update_all()
    merge.when_not_matched_insert_all().execute()


def overwrite(df: DataFrame, settings: Settings, name: str) -> None:
    """Replace a table's rows in a new version; older versions stay readable by time travel."""
    df.write.format("delta").mode("overwrite").save(settings.table_path(name))


def version(spark: SparkSession, settings: Settings, name: str) -> int:
    """The table's latest version: from its log's file names where the table is on a local disk
    (no Spark job: every micro-batch asks), else from Delta's history."""
    location = settings.table_path(name)
    if is_local(location):
        log = Path(local_location(location)) / "_delta_log"
        commits = [int(p.stem) for p in log.glob("*.json") if len(p.stem) == 20 and p.stem.isdigit()]
        if commits:
            return max(commits)
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, location).history(1).collect()[0]["version"]


def new_files(spark: SparkSession, settings: Settings, name: str, after: int | None,
              upto: int) -> list[tuple[str, int | None]] | None:
    """The data files holding the rows the table gained after version ``after`` up to ``upto``,
    as (URI, records from the file's statistics): the files that commits in between added as new
    data; compaction changes no data. ``after`` None, or a commit of the range that removed data
    (a replay's overwrite, a restore: the table was rewritten, so all of it is new to a
    reader): every file of the table at ``upto``. None when a commit of the range is gone from
    the log.

    Read from the Delta log (the commits' ``add`` and ``remove`` actions, per the Delta protocol):
    directly on a local disk, else by Spark; the snapshot by delta-rs on a local disk, else by a
    Spark scan of its file names."""
    from urllib.parse import unquote

    location = settings.table_path(name)
    local = is_local(location)
    root = local_location(location) if local else location

    def uri(path: str) -> str:
        return path if "://" in path or path.startswith("/") else f"{location.rstrip('/')}/{unquote(path)}"

    if after is None:
        if local:
            from deltalake import DeltaTable as LocalTable

            actions = LocalTable(root, version=upto).get_add_actions(flatten=True)
            return list(zip([uri(p) for p in actions.column("path").to_pylist()],
                            actions.column("num_records").to_pylist(), strict=True))
        files = (read(spark, settings, name, upto).select(F.col("_metadata.file_path").alias("file"))
                 .groupBy("file").count().collect())
        return [(r["file"], r["count"]) for r in files]
    commits = [f"{root}/_delta_log/{v:020d}.json" for v in range(after + 1, upto + 1)]
    if not commits:
        return []
    if local:
        if not all(Path(c).exists() for c in commits):
            return None
        per_commit = [Path(c).read_text(encoding="utf-8").splitlines() for c in commits]
    else:
        try:
            lines = (spark.read.text(commits).select("value", F.col("_metadata.file_path").alias("file"))
                     .collect())
        except Exception:  # noqa: BLE001 - AnalysisException: a commit file is gone (log cleaned up)
            return None
        by_file: dict[str, list[str]] = {}
        for r in lines:
            by_file.setdefault(r["file"], []).append(r["value"])
        per_commit = list(by_file.values())
    added: list[tuple[str, int | None]] = []
    for lines in per_commit:
        actions = [json.loads(line) for line in lines if line.strip()]
        if any(a["remove"].get("dataChange", True) for a in actions if "remove" in a):
            return new_files(spark, settings, name, None, upto)
        for a in actions:
            add = a.get("add")
            if add and add.get("dataChange", True):
                stats = json.loads(add["stats"]) if add.get("stats") else {}
                added.append((uri(add["path"]), stats.get("numRecords")))
    return added


def read_files(spark: SparkSession, files: list[str]) -> DataFrame:
    """Some data files of a table (``new_files``' URIs) as rows, by Spark (the columns the files
    hold: a partition column may be missing)."""
    return spark.read.parquet(*files)


def table_id(spark: SparkSession, settings: Settings, name: str) -> str:
    """The table's Delta id (new when the table is created again): from its log by delta-rs
    where the table is on a local disk (a Spark ``detail()`` costs ~2 s here), else Spark's."""
    location = settings.table_path(name)
    if is_local(location):
        from deltalake import DeltaTable as LocalTable

        return LocalTable(local_location(location)).metadata().id
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, location).detail().first()["id"]


def start_marker(settings: Settings, query: str) -> Path:
    """Where a replay or restore leaves ``query`` the source version to start at."""
    return Path(settings.checkpoint_path(query) + ".starting-version")


def stream_from(spark: SparkSession, settings: Settings, name: str, query: str,
                options: dict[str, str] | None = None) -> DataFrame:
    """A Delta streaming source for ``query`` (with Delta source ``options``): from its
    checkpoint, or, right after a replay removed the checkpoint, from the first version the
    replay did not cover."""
    reader = spark.readStream.format("delta").options(**(options or {}))
    marker = start_marker(settings, query)
    if not Path(settings.checkpoint_path(query)).exists() and marker.exists():
        reader = reader.option("startingVersion", marker.read_text().strip())
    return reader.load(settings.table_path(name))


def ready_to_stream(spark: SparkSession, settings: Settings, name: str, query: str) -> bool:
    """False while a replay's starting version for ``query`` does not exist in its source yet
    (Delta refuses a starting version beyond the table's last)."""
    marker = start_marker(settings, query)
    if Path(settings.checkpoint_path(query)).exists() or not marker.exists():
        return True
    return version(spark, settings, name) >= int(marker.read_text().strip())


def restart_after_replay(settings: Settings, query: str, next_version: int) -> None:
    """Drop ``query``'s checkpoint so it resumes at ``next_version`` of its source, the first
    version the replay did not cover (the streams are stopped during a replay)."""
    import shutil

    shutil.rmtree(settings.checkpoint_path(query), ignore_errors=True)
    marker = start_marker(settings, query)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(next_version))
