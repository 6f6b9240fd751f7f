"""Time travel and history: ``lakehouse history``, ``diff``, ``restore`` and ``maintain``, and
the range checks of ``lakehouse query --version/--as-of``.

What can be read
    A version is readable while its commit is still in the Delta log and VACUUM has not
    deleted a data file it needs. :func:`window` works that out from the log itself: the oldest
    reproducible commit (the log is cleaned after ``delta.logRetentionDuration``, 30 days by
    default) and, after each VACUUM, the newest commit that removed files more than the
    vacuum's retention before it ran: versions before that one have lost files. Timestamps are
    Delta's own: the commit file's modification time, made strictly increasing. ``--as-of T``
    reads the last version committed at or before T; a T in the future, before the table
    existed, or whose version is no longer readable is refused with the available range (one
    line, exit 2), as is a version that does not exist or is no longer readable.

The declared window
    ``LAKEHOUSE_TIME_TRAVEL_DAYS`` (default 7) is what the project promises: every version
    that was current at some time within that many days stays readable. ``maintain`` never
    vacuums, and never lets Delta clean up log entries, below it.

Restore and the streams (rule)
    ``restore`` refuses while ``lakehouse stream`` (or a replay) runs: it takes the same pid
    file, so the stream cannot start during a restore either. A RESTORE commit removes files,
    which a Delta streaming source refuses to read, and it breaks the pipeline's accounting
    unless what lies downstream is brought back in line. So each restore ends with the
    pipeline consistent again, whichever table it was:

    * ``gold.*`` -- gold is a function of silver.events. The table is restored (the RESTORE
      version stays in its history, for audit, ``diff`` and ``query --version``), then the
      gold layer is recomputed from silver.events as replay does; the refining query (bronze
      -> silver -> gold) goes on from its checkpoint. Gold = recomputation from silver holds;
      to change what gold says, restore silver.
    * ``silver.events`` / ``silver.quarantine`` -- the two are written together, batch by
      batch, so they are restored together: the other one to its version as of the restored
      version's commit time. Then every bronze row that neither table accounts for any more
      (by Kafka coordinates) is judged again by the current rules and appended (the rows of
      the restored version stay as they were); the refining query resumes after the current
      bronze version, and gold is recomputed from silver as above. Silver + quarantine =
      bronze holds. Use it to undo a bad rule: fix the rule, restore silver to before it.
    * ``bronze.events`` -- bronze mirrors the Kafka topic. After the restore, the records the
      bronze stream had already committed (its checkpoint's offsets of the last batch found
      in the table's transaction ids) that the restored version lacks are read again from
      Kafka and appended, so bronze rows = Kafka records; then silver catches up and gold is
      recomputed as above (the refining query resumes after the new bronze version). A restore of bronze therefore undoes deletes and updates made to
      bronze, not appends. Records Kafka no longer keeps cannot come back; they are counted.

    * any other table (``quality.results``): restored alone; nothing streams from it. The
      data-quality monitor takes a RESTORE of bronze or silver (as a replay's overwrite) for a
      new table: its next pass validates the table as it then is.

    A restore interrupted half-way is finished by running the same command again (every
    step after the RESTORE works out what is missing from the data); ``lakehouse replay``
    also brings silver and gold back in line.

Maintenance (rule)
    ``maintain`` compacts (OPTIMIZE) and VACUUMs every table. It refuses while the stream
    runs (same pid file): OPTIMIZE rewrites files a concurrent MERGE reads, and one of the two
    would fail with a concurrent-modification error; so there is no retry loop to get wrong.
    VACUUM keeps removed files for ``--retain-hours`` (default: the declared window); less than
    the window is refused (lower LAKEHOUSE_TIME_TRAVEL_DAYS to keep less). For a table that a
    consumer has not finished reading, more is kept, automatically: every Delta streaming
    query with a checkpoint under ``_checkpoints/`` (silver, gold: the source version its
    last committed batch ended at, matched to the table by its id), a stream waiting at the
    version a replay or restore told it to start at, the data-quality monitor (the version
    after the last it validated) and the PostgreSQL sync of the gold tables (the version
    after its high-water mark) need every
    file removed since that version's commit, plus 5 minutes. The retention is rounded up to
    whole hours: Delta's VACUUM rounds it to the nearest hour (0.4 h would be 0). Delta's own
    168-hour safety check is turned off for the call when less is kept, because these checks
    replace it, and so is Delta 4.4's habit of ignoring the retention given to VACUUM. The log retention and deleted-file retention properties are raised to the
    window when they are below it, so Delta's own clean-up never cuts into it either.
    LAKEHOUSE_TIME_TRAVEL_DAYS=0 promises no time travel: VACUUM then keeps only what the
    consumers need.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lakehouse.settings import ConfigError, Settings, get_settings, is_local, local_location
from lakehouse.tables import KAFKA_COORDINATES, TABLES, Table

UTC = dt.UTC
DEFAULT_LOG_RETENTION_H = 30 * 24.0  # delta.logRetentionDuration
DEFAULT_FILE_RETENTION_H = 7 * 24.0  # delta.deletedFileRetentionDuration, VACUUM's default
DELTA_SAFETY_H = 168.0  # below this Delta's retentionDurationCheck refuses VACUUM
CONSUMER_MARGIN_S = 300  # kept on top of what a lagging consumer needs
_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(?:\.\d+\.\d+)?(?:\.[0-9a-fA-F-]{36})?\.(?:parquet|json)$")


# --- tables and times ------------------------------------------------------------------------

def table_for(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise ConfigError(f"unknown table {name!r}; tables: {', '.join(TABLES)}") from None


def local_path(location: str) -> Path:
    """A table or checkpoint location as a local path (the lakehouse keeps its tables on a local file system)."""
    if not is_local(location):
        raise ConfigError(f"time travel reads the Delta log from a local file system; {location} is not local")
    return Path(local_location(location))


def log_dir(settings: Settings, name: str) -> Path:
    return local_path(settings.table_path(name)) / "_delta_log"


def exists(settings: Settings, name: str) -> bool:
    d = log_dir(settings, name)
    return d.is_dir() and any(_COMMIT.match(n) for n in os.listdir(d))


def require_table(settings: Settings, name: str) -> Table:
    table = table_for(name)
    if not exists(settings, name):
        raise ConfigError(f"table {name} does not exist yet at {settings.table_path(name)}; run `lakehouse stream` first")
    return table


def parse_time(text: str) -> dt.datetime:
    """ISO 8601; UTC unless a zone is given."""
    try:
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"cannot parse timestamp {text!r}; use ISO 8601, e.g. 2026-11-28T10:05:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def fmt_time(t: dt.datetime | None) -> str:
    if t is None:
        return "-"
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _ms(t: dt.datetime) -> int:
    return int(round(t.timestamp() * 1000))


def _from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=UTC)


def parse_interval_hours(text: str | None, default: float) -> float:
    """A Delta interval property ("interval 30 days", "7 days", "interval 1 week 2 hours") in hours."""
    if not text:
        return default
    units = {"week": 168.0, "day": 24.0, "hour": 1.0, "minute": 1 / 60, "second": 1 / 3600,
             "millisecond": 1 / 3_600_000, "microsecond": 1 / 3_600_000_000}
    total, found = 0.0, False
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(week|day|hour|minute|second|millisecond|microsecond)s?",
                                    text.lower()):
        total += float(number) * units[unit]
        found = True
    return total if found else default


# --- the commit log, read directly (pure Python: the dashboard uses it without Spark) ----------

@dataclass(frozen=True)
class Commit:
    version: int
    timestamp: dt.datetime  # Delta's: the commit file's modification time, made strictly increasing
    operation: str
    parameters: dict
    metrics: dict

    def as_dict(self) -> dict:
        return {"version": self.version, "timestamp": self.timestamp, "operation": self.operation,
                "operationParameters": self.parameters, "operationMetrics": self.metrics}


_INFO_CACHE: dict[tuple[str, int], tuple[int, str, dict, dict]] = {}


def _commit_info(path: Path, version: int) -> tuple[int, str, dict, dict]:
    """(mtime in ms, operation, parameters, metrics) of one commit file (immutable: cached)."""
    key = (str(path), version)
    hit = _INFO_CACHE.get(key)
    if hit is not None:
        return hit
    file = path / f"{version:020d}.json"
    mtime = os.stat(file).st_mtime_ns // 1_000_000
    operation, parameters, metrics = "UNKNOWN", {}, {}
    with open(file, encoding="utf-8") as f:
        for line in f:
            if line.startswith('{"commitInfo"'):
                info = json.loads(line)["commitInfo"]
                operation = info.get("operation") or "UNKNOWN"
                parameters = {k: v for k, v in (info.get("operationParameters") or {}).items()}
                metrics = {k: v for k, v in (info.get("operationMetrics") or {}).items()}
                break
    value = (mtime, operation, parameters, metrics)
    if len(_INFO_CACHE) > 200_000:
        _INFO_CACHE.clear()
    _INFO_CACHE[key] = value
    return value


def listing(path: Path) -> tuple[list[int], list[int]]:
    """(commit versions, checkpoint versions) present in a _delta_log folder, sorted."""
    commits, checkpoints = [], set()
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return [], []
    for n in names:
        m = _COMMIT.match(n)
        if m:
            commits.append(int(m.group(1)))
            continue
        m = _CHECKPOINT.match(n)
        if m:
            checkpoints.add(int(m.group(1)))
    return sorted(commits), sorted(checkpoints)


def commits(settings: Settings, name: str) -> list[Commit]:
    """Every reproducible commit of a table, oldest first, with Delta's timestamps."""
    path = log_dir(settings, name)
    versions, checkpoints = listing(path)
    if not versions:
        return []
    first = versions[0]
    if first != 0:  # the log was cleaned: start at a checkpoint with every later commit present
        usable = [c for c in checkpoints if c + 1 >= first and c <= versions[-1]]
        first = usable[0] if usable else first
    present = set(versions)
    chain = []
    for v in range(versions[-1], first - 1, -1):
        if v not in present:
            break
        chain.append(v)
    chain.reverse()
    out, previous = [], None
    for v in chain:
        mtime, operation, parameters, metrics = _commit_info(path, v)
        if previous is not None and mtime <= previous:
            mtime = previous + 1
        previous = mtime
        out.append(Commit(v, _from_ms(mtime), operation, parameters, metrics))
    return out


def txn_version(settings: Settings, name: str, app_id: str, *, newest: int | None = None) -> int | None:
    """The last batch id that writer ``app_id`` committed to the table (Delta's SetTransaction)."""
    path = log_dir(settings, name)
    versions, _ = listing(path)
    for v in reversed(versions):
        if newest is not None and v > newest:
            continue
        with open(path / f"{v:020d}.json", encoding="utf-8") as f:
            for line in f:
                if line.startswith('{"txn"'):
                    txn = json.loads(line)["txn"]
                    if txn.get("appId") == app_id:
                        return int(txn["version"])
    return None


def _min_deletion_ms(path: Path, version: int) -> int | None:
    """Earliest deletion timestamp of the files a commit removed (None if it removed none)."""
    low = None
    with open(path / f"{version:020d}.json", encoding="utf-8") as f:
        for line in f:
            if line.startswith('{"remove"'):
                ts = json.loads(line)["remove"].get("deletionTimestamp")
                if ts is not None and (low is None or ts < low):
                    low = ts
    return low


NO_DATA_CHANGE = {"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES", "UNSET TBLPROPERTIES"}
_APPEND_ONLY = {"CREATE TABLE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES", "UNSET TBLPROPERTIES",
                "ADD COLUMNS", "CHANGE COLUMN", "UPGRADE PROTOCOL", "ADD CONSTRAINT", "DROP CONSTRAINT"}


def may_remove_files(c: Commit) -> bool:
    """Whether a commit may have removed data files (only those can be broken by a VACUUM)."""
    for key in ("numRemovedFiles", "numTargetFilesRemoved",  # Spark's names, then delta-rs's
                "num_removed_files", "num_target_files_removed", "numFilesRemoved"):
        if key in c.metrics:
            return _int(c.metrics[key]) not in (0, None)
    if c.operation in _APPEND_ONLY:
        return False
    mode = (c.parameters.get("mode") or c.parameters.get("outputMode") or "").lower()
    return not (c.operation in ("WRITE", "STREAMING UPDATE") and mode == "append")


@dataclass
class Window:
    """What time travel can reach in one table, now."""
    table: str
    first: int  # oldest version whose commit is still in the log
    oldest: int  # oldest version still readable
    latest: int
    times: dict[int, dt.datetime] = field(repr=False)
    declared_days: float
    now: dt.datetime
    log_retention_h: float | None = None
    file_retention_h: float | None = None
    vacuum_cutoff: dt.datetime | None = None  # files removed before this time may be gone
    reason: str = ""

    @property
    def oldest_time(self) -> dt.datetime:
        return self.times[self.oldest]

    @property
    def latest_time(self) -> dt.datetime:
        return self.times[self.latest]

    @property
    def declared_cutoff(self) -> dt.datetime:
        return self.now - dt.timedelta(days=self.declared_days)

    def span(self) -> str:
        return (f"versions {self.oldest}..{self.latest} "
                f"({fmt_time(self.oldest_time)} .. {fmt_time(self.latest_time)})")

    def version_at(self, when: dt.datetime) -> int | None:
        """The version current at ``when``: the last one committed at or before it."""
        found = None
        for v in range(self.first, self.latest + 1):
            if self.times[v] <= when:
                found = v
            else:
                break
        return found

    def as_json(self) -> dict:
        return {"table": self.table, "oldest_version": self.oldest, "oldest_time": fmt_time(self.oldest_time),
                "latest_version": self.latest, "latest_time": fmt_time(self.latest_time),
                "first_version_in_log": self.first, "declared_days": self.declared_days,
                "declared_since": fmt_time(self.declared_cutoff),
                "log_retention_hours": self.log_retention_h, "deleted_file_retention_hours": self.file_retention_h,
                "vacuumed_before": fmt_time(self.vacuum_cutoff) if self.vacuum_cutoff else None,
                "reason": self.reason or None}

    def describe(self) -> str:
        text = f"time travel: {self.span()} readable"
        if self.reason:
            text += f" ({self.reason})"
        text += (f"; declared window {self.declared_days:g} days (LAKEHOUSE_TIME_TRAVEL_DAYS): "
                 f"versions current since {fmt_time(self.declared_cutoff)} are kept by `lakehouse maintain`")
        return text


def window(settings: Settings, name: str, *, properties: dict | None = None, now: dt.datetime | None = None,
           log: list[Commit] | None = None) -> Window:
    """The versions of ``name`` that can be read now (see the module docstring)."""
    log = commits(settings, name) if log is None else log
    if not log:
        raise ConfigError(f"table {name} does not exist yet at {settings.table_path(name)}; run `lakehouse stream` first")
    now = now or dt.datetime.now(UTC)
    times = {c.version: c.timestamp for c in log}
    first, latest = log[0].version, log[-1].version
    oldest, reason, cutoff = first, "", None
    if first > 0:
        reason = "older log entries were cleaned up after the log retention"
    path = log_dir(settings, name)
    by_version = {c.version: c for c in log}
    for vac in (c for c in log if c.operation == "VACUUM START"):
        retention = _int(vac.parameters.get("specifiedRetentionMillis"))
        if retention is None:
            retention = _int(vac.parameters.get("defaultRetentionMillis"))
        if retention is None:
            retention = int(DEFAULT_FILE_RETENTION_H * 3_600_000)
        vac_cutoff = _ms(vac.timestamp) - retention
        cutoff = max(cutoff or vac_cutoff, vac_cutoff)
        # The newest commit before the vacuum that removed a file deleted before the cutoff:
        # every version before it needs a file VACUUM may have deleted.
        for v in range(vac.version - 1, oldest - 1, -1):
            c = by_version[v]
            if _ms(c.timestamp) - 2 * CONSUMER_MARGIN_S * 1000 > vac_cutoff or not may_remove_files(c):
                continue
            low = _min_deletion_ms(path, v)
            if low is not None and low < vac_cutoff:
                if v > oldest:
                    oldest = v
                    reason = f"older versions lost files to VACUUM on {fmt_time(vac.timestamp)}"
                break
    props = properties or {}
    return Window(name, first, oldest, latest, times, settings.time_travel_days, now,
                  parse_interval_hours(props.get("delta.logRetentionDuration"), DEFAULT_LOG_RETENTION_H),
                  parse_interval_hours(props.get("delta.deletedFileRetentionDuration"), DEFAULT_FILE_RETENTION_H),
                  _from_ms(cutoff) if cutoff is not None else None, reason)


def resolve(settings: Settings, name: str, *, version: int | None = None, as_of: str | dt.datetime | None = None,
            win: Window | None = None, now: dt.datetime | None = None) -> int:
    """The readable version asked for (latest when neither is given); anything else is a ConfigError
    of one line that gives the available range."""
    require_table(settings, name)
    win = win or window(settings, name, now=now)
    if version is not None:
        if version < 0:
            raise ConfigError(f"version must be 0 or more, got {version}")
        if version > win.latest:
            raise ConfigError(f"{name} has no version {version} (latest is {win.latest}); available: {win.span()}")
        if version < win.oldest:
            raise ConfigError(f"{name} version {version} is no longer readable; available: {win.span()}")
        return version
    if as_of is not None:
        when = as_of if isinstance(as_of, dt.datetime) else parse_time(as_of)
        shown = as_of if isinstance(as_of, str) else fmt_time(as_of)
        if when > (now or win.now):
            raise ConfigError(f"{shown} is in the future; available: {win.span()}")
        found = win.version_at(when)
        if found is None:
            if win.first == 0:
                raise ConfigError(f"{name} did not exist yet at {shown}; available: {win.span()}")
            raise ConfigError(f"{name} at {shown} is no longer in the log; available: {win.span()}")
        if found < win.oldest:
            raise ConfigError(f"{name} at {shown} (version {found}) is no longer readable; available: {win.span()}")
        return found
    return win.latest


# --- history -----------------------------------------------------------------------------------

def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _first(m: dict, *keys: str) -> int | None:
    for k in keys:
        if k in m and _int(m[k]) is not None:
            return _int(m[k])
    return None


def change_metrics(operation: str, parameters: dict, metrics: dict) -> dict:
    """Rows added / removed / updated and files added / removed of one commit, from Delta's
    operationMetrics (None where the operation does not report it)."""
    m = metrics or {}
    out = {"rows_added": None, "rows_removed": None, "rows_updated": None, "files_added": None, "files_removed": None}
    if operation == "MERGE":  # Spark's names, then delta-rs's (gold's upserts in the stream)
        out.update(rows_added=_first(m, "numTargetRowsInserted", "num_target_rows_inserted"),
                   rows_updated=_first(m, "numTargetRowsUpdated", "num_target_rows_updated"),
                   rows_removed=_first(m, "numTargetRowsDeleted", "num_target_rows_deleted"),
                   files_added=_first(m, "numTargetFilesAdded", "num_target_files_added"),
                   files_removed=_first(m, "numTargetFilesRemoved", "num_target_files_removed"))
    elif operation == "RESTORE":
        out.update(files_added=_first(m, "numRestoredFiles"), files_removed=_first(m, "numRemovedFiles"))
    elif operation == "VACUUM END":
        out.update(files_removed=_first(m, "numDeletedFiles"))
    elif operation == "VACUUM START":
        pass
    elif operation == "OPTIMIZE":  # Spark's names, then delta-rs's (its compaction after the stream's appends)
        out.update(files_added=_first(m, "numAddedFiles", "numFilesAdded"),
                   files_removed=_first(m, "numRemovedFiles", "numFilesRemoved"))
    else:  # Spark's names, then delta-rs's (the stream's appends)
        out.update(rows_added=_first(m, "numOutputRows", "numInsertedRows", "num_added_rows"),
                   rows_removed=_first(m, "numDeletedRows"),
                   rows_updated=_first(m, "numUpdatedRows"),
                   files_added=_first(m, "numFiles", "numAddedFiles", "num_added_files"),
                   files_removed=_first(m, "numRemovedFiles", "num_removed_files"))
    return out


def details(operation: str, parameters: dict, metrics: dict) -> str:
    """A short readable note on a commit: mode, predicate, restored version..."""
    p, m = parameters or {}, metrics or {}
    if operation == "WRITE":
        return f"mode {p.get('mode', '?')}"
    if operation == "STREAMING UPDATE":
        return f"epoch {p.get('epochId', '?')}"
    if operation == "RESTORE":
        return f"to version {p.get('version')}" if p.get("version") is not None else f"to {p.get('timestamp')}"
    if operation == "VACUUM START":
        retention = _int(p.get("specifiedRetentionMillis"))
        retention = retention if retention is not None else _int(p.get("defaultRetentionMillis"))
        hours = f"retain {retention / 3_600_000:g} h, " if retention is not None else ""
        return f"{hours}{m.get('numFilesToDelete', '?')} files to delete"
    if operation == "OPTIMIZE":  # Spark's auto compaction, or delta-rs's after the stream's appends
        return "auto compaction" if str(p.get("auto")).lower() == "true" or "targetSize" in p else ""
    pred = p.get("predicate") or (p.get("mergePredicate") if operation == "MERGE" else None)  # Spark's, delta-rs's
    if operation in ("DELETE", "UPDATE", "MERGE") and pred:
        pred = str(pred)
        return pred if len(pred) <= 60 else pred[:57] + "..."
    if operation == "SET TBLPROPERTIES":
        return str(p.get("properties", ""))
    return ""


def history_row(version: int, timestamp: dt.datetime, operation: str, parameters: dict, metrics: dict) -> dict:
    # PySpark gives naive local times; astimezone reads a naive time as local.
    return {"version": version, "timestamp": fmt_time(timestamp.astimezone(UTC)),
            "operation": operation, **change_metrics(operation, parameters, metrics),
            "details": details(operation, parameters, metrics)}


def history(spark, settings: Settings, name: str, limit: int | None = None) -> tuple[list[dict], Window]:
    """Newest first: Delta's history (DeltaTable.history) summarised, and the readable window."""
    from delta.tables import DeltaTable

    require_table(settings, name)
    table = DeltaTable.forPath(spark, settings.table_path(name))
    rows = (table.history(limit) if limit else table.history()).select(
        "version", "timestamp", "operation", "operationParameters", "operationMetrics").collect()
    out = []
    for r in sorted(rows, key=lambda r: -r["version"]):
        summary = history_row(r["version"], r["timestamp"], r["operation"], r["operationParameters"] or {},
                              r["operationMetrics"] or {})
        summary["operationParameters"] = dict(r["operationParameters"] or {})
        summary["operationMetrics"] = dict(r["operationMetrics"] or {})
        out.append(summary)
    props = table.detail().first()["properties"] or {}
    return out, window(settings, name, properties=dict(props))


# --- diff ----------------------------------------------------------------------------------------

CHANGE_COLUMNS = ("_change_type", "_commit_version", "_commit_timestamp")


@dataclass
class Diff:
    table: str
    from_version: int
    to_version: int
    method: str  # "change data feed" or "key comparison"
    inserted: object  # DataFrames of rows (inserted, deleted) and of (key..., before, after) (updated)
    deleted: object
    updated: object
    note: str = ""

    def inverse(self) -> Diff:
        from pyspark.sql import functions as F

        swapped = self.updated.select(*[c for c in self.updated.columns if c not in ("before", "after")],
                                      F.col("after").alias("before"), F.col("before").alias("after"))
        return Diff(self.table, self.to_version, self.from_version, self.method, self.deleted, self.inserted,
                    swapped, self.note)


def _has_cdf(spark, settings: Settings, name: str, v1: int, v2: int) -> bool:
    """CDF enabled at both versions (and every version between, if it was switched)."""
    from delta.tables import DeltaTable

    props = DeltaTable.forPath(spark, settings.table_path(name)).detail().first()["properties"] or {}
    if str(props.get("delta.enableChangeDataFeed", "false")).lower() != "true":
        return False
    for c in commits(settings, name):
        if v1 < c.version <= v2 and c.operation in ("SET TBLPROPERTIES", "UNSET TBLPROPERTIES") and \
                "enableChangeDataFeed" in json.dumps(c.parameters):
            return False
    return True


def _classify(table: Table, before_after):
    """(inserted, deleted, updated) from a frame of keys + ``before`` and ``after`` row structs."""
    from pyspark.sql import functions as F

    values = [c for c in table.column_names]
    inserted = before_after.where(F.col("before").isNull() & F.col("after").isNotNull()).select("after.*")
    deleted = before_after.where(F.col("before").isNotNull() & F.col("after").isNull()).select("before.*")
    updated = before_after.where(F.col("before").isNotNull() & F.col("after").isNotNull()
                                 & ~F.col("before").eqNullSafe(F.col("after")))
    updated = updated.select(*[F.col(k) for k in table.keys], "before", "after")
    return inserted.select(*values), deleted.select(*values), updated


def _diff_by_change_feed(spark, settings: Settings, table: Table, v1: int, v2: int):
    """Per key: the state before its first change after v1 and after its last change up to v2."""
    from pyspark.sql import functions as F

    changes = (spark.read.format("delta").option("readChangeFeed", "true")
               .option("startingVersion", v1 + 1).option("endingVersion", v2)
               .load(settings.table_path(table.name)))
    row = F.struct(*[F.col(c) for c in table.column_names])
    # Within one commit the old image (delete, update_preimage) comes before the new one.
    order = F.struct(F.col("_commit_version"),
                     F.when(F.col("_change_type").isin("delete", "update_preimage"), 0).otherwise(1))
    per_key = changes.groupBy(*table.keys).agg(
        F.min_by(F.struct(row.alias("row"), F.col("_change_type").alias("type")), order).alias("first"),
        F.max_by(F.struct(row.alias("row"), F.col("_change_type").alias("type")), order).alias("last"))
    before_after = per_key.select(
        *table.keys,
        F.when(F.col("first.type").isin("delete", "update_preimage"), F.col("first.row")).alias("before"),
        F.when(F.col("last.type").isin("insert", "update_postimage"), F.col("last.row")).alias("after"))
    return _classify(table, before_after)


def _diff_by_keys(spark, settings: Settings, table: Table, v1: int, v2: int):
    """Full outer join of the two snapshots on the table's declared keys."""
    from pyspark.sql import functions as F

    def snap(v, alias):
        df = spark.read.format("delta").option("versionAsOf", v).load(settings.table_path(table.name))
        return df.select(*[F.col(k).alias(f"{alias}_{k}") for k in table.keys],
                         F.struct(*[F.col(c) for c in table.column_names]).alias(alias))

    a, b = snap(v1, "before"), snap(v2, "after")
    cond = None
    for k in table.keys:
        c = F.col(f"before_{k}").eqNullSafe(F.col(f"after_{k}"))
        cond = c if cond is None else cond & c
    joined = a.join(b, cond, "full_outer")
    before_after = joined.select(
        *[F.coalesce(F.col(f"before_{k}"), F.col(f"after_{k}")).alias(k) for k in table.keys], "before", "after")
    return _classify(table, before_after)


def diff(spark, settings: Settings, name: str, v1: int, v2: int, *, method: str | None = None) -> Diff:
    """Rows inserted, deleted and updated from version v1 to version v2 (either order).

    From the Change Data Feed where the table has it, aggregated per key (a key inserted then
    updated is an insert with its final values; inserted then deleted is nothing); otherwise,
    or when the feed cannot be read, by comparing the two versions on the declared keys."""
    table = table_for(name)
    if v1 > v2:
        return diff(spark, settings, name, v2, v1, method=method).inverse()
    note = ""
    use_cdf = method == "cdf" or (method is None and v1 < v2 and _has_cdf(spark, settings, name, v1, v2))
    if use_cdf and v1 < v2:
        try:
            inserted, deleted, updated = _diff_by_change_feed(spark, settings, table, v1, v2)
            inserted.limit(1).count()  # fail here if the feed cannot be read (e.g. vacuumed)
            return Diff(name, v1, v2, "change data feed", inserted, deleted, updated)
        except Exception as e:  # noqa: BLE001 - fall back to the exact comparison
            if method == "cdf":
                raise
            note = f"change data feed not readable ({str(e).strip().splitlines()[0][:120]}); compared by keys"
    inserted, deleted, updated = _diff_by_keys(spark, settings, table, v1, v2)
    return Diff(name, v1, v2, "key comparison", inserted, deleted, updated, note)


def diff_json(d: Diff, limit: int | None) -> dict:
    """Counts and (up to ``limit`` per group) rows; updated rows as key, before, after, changed columns."""
    from lakehouse.inspect import _jsonable

    table = table_for(d.table)

    def take(df):
        return [r.asDict(recursive=True) for r in (df.limit(limit) if limit else df).collect()]

    counts = {"inserted": d.inserted.count(), "deleted": d.deleted.count(), "updated": d.updated.count()}
    updated = []
    for r in take(d.updated):
        before, after = r["before"], r["after"]
        updated.append({"key": {k: _jsonable(r[k]) for k in table.keys},
                        "changed": [c for c in table.column_names if before.get(c) != after.get(c)],
                        "before": {k: _jsonable(v) for k, v in before.items()},
                        "after": {k: _jsonable(v) for k, v in after.items()}})
    return {"table": d.table, "from_version": d.from_version, "to_version": d.to_version, "method": d.method,
            "note": d.note or None, "counts": counts,
            "inserted": [{k: _jsonable(v) for k, v in r.items()} for r in take(d.inserted)],
            "deleted": [{k: _jsonable(v) for k, v in r.items()} for r in take(d.deleted)],
            "updated": updated, "limit": limit or None}


# --- restore -------------------------------------------------------------------------------------

SILVER_PAIR = {"silver.events": "silver.quarantine", "silver.quarantine": "silver.events"}
COORDS = [name for name, _, _ in KAFKA_COORDINATES]  # a record's Kafka position


def stream_running(settings: Settings) -> int | None:
    """pid of a running `lakehouse stream` (or replay, restore, maintain), from its pid file."""
    from lakehouse.stack import read_pid

    pid = read_pid(settings.home / "stream.pid")
    return pid if pid and pid != os.getpid() else None


def _refuse_if_streaming(settings: Settings, what: str) -> None:
    pid = stream_running(settings)
    if pid:
        raise ConfigError(f"`lakehouse stream` (or a replay, restore or maintain) is running (pid {pid}); "
                          f"stop it before {what}")


def restore_plan(settings: Settings, name: str, version: int) -> list[tuple[str, int]]:
    """The (table, version) pairs a restore of ``name`` to ``version`` rolls back (silver goes in pairs)."""
    win = window(settings, name)
    resolve(settings, name, version=version, win=win)
    plan = [(name, version)] if version != win.latest else []
    other = SILVER_PAIR.get(name)
    if other and exists(settings, other):
        other_win = window(settings, other)
        v = other_win.version_at(win.times[version])
        if v is None:
            v = other_win.first
        if v < other_win.oldest:
            raise ConfigError(f"{other} must be restored with {name}, but its version as of "
                              f"{fmt_time(win.times[version])} ({v}) is no longer readable; "
                              f"available: {other_win.span()}")
        if v != other_win.latest:
            plan.append((other, v))
    return plan


def describe_plan(name: str, plan: list[tuple[str, int]], settings: Settings) -> str:
    lines = [f"restore {t} from version {window(settings, t).latest} to version {v}" for t, v in plan]
    layer = table_for(name).layer
    if layer == "gold":
        lines.append("then recompute the gold layer from silver.events (gold = recomputation from silver); "
                     "the stream goes on from its checkpoint")
    elif layer == "silver":
        lines.append("then judge again every bronze row the restored silver lacks, recompute gold from silver; "
                     "the silver and gold stream resumes after it")
    elif layer == "bronze":
        lines.append("then re-read from Kafka the records the restored version lacks, catch silver up, recompute "
                     "gold from silver; the silver and gold stream resumes after it")
    else:
        lines.append("no stream reads or recomputes this table: nothing else changes")
    return "\n".join(lines)


def _offsets(checkpoint: Path, batch: int) -> list[dict]:
    """The source offsets a streaming query planned for one batch (its checkpoint's offsets/<batch>)."""
    lines = (checkpoint / "offsets" / str(batch)).read_text().splitlines()
    return [json.loads(line) for line in lines[2:] if line.strip() and line.strip() != "-"]


def _batches(checkpoint: Path, sub: str) -> list[int]:
    d = checkpoint / sub
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if d.is_dir() else []


def _kafka_records_committed(spark, settings: Settings):
    """The Kafka records the bronze stream has committed to bronze.events (its checkpoint's
    offsets up to the last batch found in the table's transaction ids), or None."""
    from lakehouse import storage
    from lakehouse.bronze import stream as bronze_stream

    checkpoint = local_path(settings.checkpoint_path(bronze_stream.QUERY))
    if not (checkpoint / "metadata").exists():
        return None
    query = storage.query_id(spark, settings, bronze_stream.QUERY)
    batch = txn_version(settings, "bronze.events", query)
    if batch is None or not (checkpoint / "offsets" / str(batch)).exists():
        return None
    ends = {}
    for offset in _offsets(checkpoint, batch):
        for topic, parts in offset.items():
            ends[topic] = {str(p): int(o) for p, o in parts.items()}
    if not ends:
        return None
    return (spark.read.format("kafka")
            .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
            .option("subscribe", ",".join(sorted(ends)))
            .option("startingOffsets", "earliest")
            .option("endingOffsets", json.dumps(ends))
            .option("includeHeaders", "true")
            .option("failOnDataLoss", "false")
            .load()), sum(sum(p.values()) for p in ends.values())


def _refill_bronze(spark, settings: Settings, kafka) -> int:
    """Append the Kafka records bronze lacks (by coordinates)."""
    from lakehouse import storage
    from lakehouse.bronze.transforms import to_bronze

    bronze = storage.read(spark, settings, "bronze.events").select(*COORDS)
    missing = to_bronze(kafka).join(bronze, COORDS, "left_anti").localCheckpoint()
    n = missing.count()
    if n:
        missing.write.format("delta").mode("append").save(settings.table_path("bronze.events"))
    return n


def _catch_up_silver(spark, settings: Settings) -> dict:
    """Judge every bronze row that silver.events and silver.quarantine do not account for, append
    the outcome, and have the refining query resume after the current bronze version (gold
    is recomputed after this)."""
    from pyspark.sql import functions as F

    from lakehouse import storage
    from lakehouse.gold import stream as refine
    from lakehouse.silver import stream as silver_stream

    bronze_version = storage.version(spark, settings, "bronze.events")
    bronze = spark.read.format("delta").option("versionAsOf", bronze_version).load(
        settings.table_path("bronze.events"))
    silver = storage.read(spark, settings, "silver.events")
    quarantine = storage.read(spark, settings, "silver.quarantine")
    accounted = silver.select(*COORDS).unionByName(quarantine.select(*COORDS))
    missing = bronze.join(accounted, COORDS, "left_anti").localCheckpoint()
    n = missing.count()
    fresh_n = quarantined_n = 0
    if n:
        # against the whole of silver, as a replay de-duplicates
        rows = silver_stream.split(missing, settings, silver_stream.keys_in(silver))
        fresh, quarantined = rows.events, rows.quarantine.localCheckpoint()  # split pins the events
        fresh_n, quarantined_n = fresh.count(), quarantined.count()
        if quarantined_n:
            quarantined.write.format("delta").mode("append").save(settings.table_path("silver.quarantine"))
        if fresh_n:
            fresh.write.format("delta").mode("append").save(settings.table_path("silver.events"))
    orphans = accounted.join(bronze.select(*COORDS), COORDS, "left_anti").agg(F.count(F.lit(1))).first()[0]
    storage.restart_after_replay(settings, refine.QUERY, bronze_version + 1)
    return {"bronze_version": bronze_version, "rejudged": n, "to_silver": fresh_n, "to_quarantine": quarantined_n,
            "not_in_bronze": orphans}


def _rebuild_gold(spark, settings: Settings) -> int:
    from lakehouse import storage
    from lakehouse.gold import stream as gold_stream

    gold_stream.rebuild(spark, settings)
    return storage.version(spark, settings, "silver.events")


def restore(spark, settings: Settings, name: str, version: int, *, confirm=None, out=print) -> dict:
    """``lakehouse restore``: roll ``name`` back to ``version`` and bring the pipeline back in
    line (see the module docstring for the rule). ``confirm(text) -> bool`` is asked first."""
    from delta.tables import DeltaTable

    from lakehouse import pipeline, storage

    table = require_table(settings, name)
    _refuse_if_streaming(settings, "restoring a table")
    plan = restore_plan(settings, name, version)
    if not plan:
        out(f"{name} is already at version {version}: nothing to restore")
        return {"restored": []}
    if confirm is not None and not confirm(describe_plan(name, plan, settings)):
        out("restore cancelled")
        return {"restored": []}
    pipeline._claim(settings)  # the stream cannot start while we restore
    try:
        result: dict = {"restored": []}
        kafka = None
        if table.layer == "bronze":
            committed = _kafka_records_committed(spark, settings)
            if committed is not None:
                kafka = committed[0].localCheckpoint()  # read before the restore: Kafka must answer
                kafka.count()
        for t, v in plan:
            DeltaTable.forPath(spark, settings.table_path(t)).restoreToVersion(v)
            new = storage.version(spark, settings, t)
            result["restored"].append({"table": t, "to_version": v, "new_version": new})
            out(f"restored {t} to version {v} (new version {new})")
        if table.layer == "bronze":
            refilled = _refill_bronze(spark, settings, kafka) if kafka is not None else 0
            result["refilled_from_kafka"] = refilled
            out(f"re-read {refilled} records from Kafka that the restored bronze.events lacked")
        if table.layer in ("bronze", "silver"):
            try:
                caught = _catch_up_silver(spark, settings)
            except ConfigError as e:  # a rule with policy fail stopped the judging: nothing of it was written
                raise ConfigError(f"{name} was restored, but judging again the bronze rows silver lacks stopped: "
                                  f"{str(e).splitlines()[0]} Once fixed, run the same restore again.") from None
            result["silver"] = caught
            out(f"silver: {caught['rejudged']} bronze rows judged again -> {caught['to_silver']} events, "
                f"{caught['to_quarantine']} quarantined; the silver and gold stream resumes after bronze version "
                f"{caught['bronze_version']}")
            if caught["not_in_bronze"]:
                out(f"warning: {caught['not_in_bronze']} silver/quarantine rows name Kafka records that bronze "
                    "does not hold (Kafka no longer keeps them)")
        if table.layer in ("bronze", "silver", "gold"):
            silver_version = _rebuild_gold(spark, settings)
            result["gold_from_silver_version"] = silver_version
            out(f"gold recomputed from silver.events version {silver_version}")
            try:
                from serving import sync

                sync.sync_all(settings)
            except Exception as e:  # noqa: BLE001 - PostgreSQL away: the next stream or `lakehouse sync` catches up
                out(f"note: the copy to PostgreSQL failed ({str(e).strip().splitlines()[0][:160]}); "
                    "the next `lakehouse stream` or `lakehouse sync` catches up")
        return result
    finally:
        pipeline._pidfile(settings).unlink(missing_ok=True)


# --- maintain ------------------------------------------------------------------------------------

def _checkpoint_position(checkpoint: Path) -> list[dict]:
    """The Delta source offsets a streaming query still has to read from: where its last
    committed batch ended (version 0 while its first batch is not done; [] before any batch)."""
    committed = _batches(checkpoint, "commits")
    planned = _batches(checkpoint, "offsets")
    if not planned:
        return []
    batch = committed[-1] if committed and committed[-1] in planned else None
    if batch is None:  # its first batch is not done: it needs the source from where it started
        return [dict(o, reservoirVersion=0) for o in _offsets(checkpoint, planned[0]) if "reservoirId" in o]
    return [o for o in _offsets(checkpoint, batch) if "reservoirId" in o and "reservoirVersion" in o]


def stream_source_version(settings: Settings, query: str) -> int | None:
    """The first version of its Delta source a streaming query still has to read: the source
    offset of its last committed batch, or the version a replay or restore told it to start
    at. None when it has no state yet."""
    checkpoint = local_path(settings.checkpoint_path(query))
    marker = Path(str(checkpoint) + ".starting-version")
    if not checkpoint.exists():
        return int(marker.read_text().strip()) if marker.exists() else None
    offsets = _checkpoint_position(checkpoint)
    if not offsets:
        return int(marker.read_text().strip()) if marker.exists() else 0
    return min(int(o["reservoirVersion"]) for o in offsets)


def consumer_needs(spark, settings: Settings, now: dt.datetime, out=print) -> dict[str, tuple[float, str]]:
    """Per table, the hours of removed files its lagging consumers still need, and who: every
    streaming query with a checkpoint under LAKEHOUSE_ROOT/_checkpoints that reads a Delta
    table (matched by the table id in its offsets), a stream waiting at a replay's or restore's
    starting version, and the PostgreSQL sync of the gold tables."""
    from lakehouse import storage
    from lakehouse.gold import stream as refine

    needs: dict[str, tuple[float, str]] = {}
    ids = {storage.table_id(spark, settings, name): name for name in TABLES if exists(settings, name)}

    def need(table: str, version: int, who: str, *, snapshot: bool = False) -> None:
        if not exists(settings, table):
            return
        log = commits(settings, table)
        ops = {c.version: c.operation for c in log}
        # Commits that change no data (compaction, vacuum, properties) give a reader nothing to
        # read; a stream still reading a snapshot of that version needs its files, though.
        while not snapshot and ops.get(version) in NO_DATA_CHANGE:
            version += 1
        if version > log[-1].version:
            return
        times = {c.version: c.timestamp for c in log}
        since = times.get(version, log[0].timestamp)
        hours = ((now - since).total_seconds() + CONSUMER_MARGIN_S) / 3600
        if hours > needs.get(table, (0.0, ""))[0]:
            needs[table] = (hours, f"{who} still reads it from version {version} ({fmt_time(since)})")

    root = local_path(settings.checkpoint_path("x")).parent
    if root.is_dir():
        for checkpoint in sorted(p for p in root.iterdir() if p.is_dir()):
            try:
                offsets = _checkpoint_position(checkpoint)
            except (OSError, ValueError) as e:
                out(f"note: cannot read the checkpoint {checkpoint.name} ({e}); it is not taken into account")
                continue
            for o in offsets:
                table = ids.get(o.get("reservoirId"))
                if table:
                    need(table, int(o["reservoirVersion"]), f"the {checkpoint.name} stream",
                         snapshot=bool(o.get("isStartingVersion")))
    from lakehouse import quality

    for table in quality.MONITORED:  # the data-quality monitor reads the versions after the last it validated
        try:
            done = quality.validated_version(spark, settings, table, storage.table_id(spark, settings, table))
        except Exception as e:  # noqa: BLE001 - no quality.results yet: the monitor starts from a snapshot
            out(f"note: cannot read the data-quality monitor's position in {table} "
                f"({str(e).strip().splitlines()[0][:120]}); it is not taken into account")
            continue
        if done is not None:
            need(table, done + 1, "the data-quality monitor")
    if not local_path(settings.checkpoint_path(refine.QUERY)).exists():  # waiting at a starting version
        v = stream_source_version(settings, refine.QUERY)
        if v is not None:
            need(refine.SOURCE, v, f"the {refine.QUERY} stream")
    try:
        import psycopg2

        from lakehouse.stack import writer_url

        conn = psycopg2.connect(writer_url(settings), connect_timeout=3)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass('public.sync_state') IS NOT NULL")
                synced = []
                if cur.fetchone()[0]:
                    cur.execute("SELECT table_name, delta_version, table_id FROM sync_state")
                    synced = cur.fetchall()
        finally:
            conn.close()
        for table, version, table_id in synced:
            if ids.get(table_id) == table:  # the table the sync copied is still the one there
                need(table, int(version) + 1, "the PostgreSQL sync")
    except Exception as e:  # noqa: BLE001 - the sync's position is a refinement; say so and go on
        out(f"note: cannot read the serving sync's position ({str(e).strip().splitlines()[0][:120]}); "
            "gold tables keep the declared window only")
    return needs


def retention_hours(settings: Settings, retain_hours: float | None) -> float:
    """--retain-hours checked against the declared window (default: the window itself)."""
    window_h = settings.time_travel_days * 24
    retain = window_h if retain_hours is None else retain_hours
    if retain < 0:
        raise ConfigError(f"--retain-hours must be 0 or more, got {retain:g}")
    if retain + 1e-9 < window_h:
        raise ConfigError(f"--retain-hours {retain:g} is below the declared time-travel window of {window_h:g} h "
                          f"(LAKEHOUSE_TIME_TRAVEL_DAYS={settings.time_travel_days:g}); lower "
                          "LAKEHOUSE_TIME_TRAVEL_DAYS to keep less")
    return retain


# Delta 4.4 ignores VACUUM's RETAIN hours (other than 0) unless this is off, and falls back
# on the table's delta.deletedFileRetentionDuration: the retention computed here must apply.
IGNORE_RETAIN = "spark.databricks.delta.vacuum.retentionWindowIgnore.enabled"


@contextlib.contextmanager
def _session_conf(spark, values: dict[str, str]):
    """Set Spark session settings for the block, then put back what was there."""
    previous = {k: spark.conf.get(k, None) for k in values}
    for k, v in values.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in previous.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


def maintain(spark, settings: Settings, retain_hours: float | None = None, out=print) -> list[dict]:
    """``lakehouse maintain``: OPTIMIZE and VACUUM every table (see the module docstring for the rule)."""
    from delta.tables import DeltaTable

    from lakehouse import pipeline, storage

    window_h = settings.time_travel_days * 24
    retain = retention_hours(settings, retain_hours)
    _refuse_if_streaming(settings, "maintenance")
    pipeline._claim(settings)
    check = "spark.databricks.delta.retentionDurationCheck.enabled"
    try:
        now = dt.datetime.now(UTC)
        needs = consumer_needs(spark, settings, now, out)
        results = []
        for name in TABLES:
            if not exists(settings, name):
                out(f"{name:<26} does not exist yet: skipped")
                continue
            path = settings.table_path(name)
            table = DeltaTable.forPath(spark, path)
            props = table.detail().first()["properties"] or {}
            raised = {}
            for prop, default in (("delta.logRetentionDuration", DEFAULT_LOG_RETENTION_H),
                                  ("delta.deletedFileRetentionDuration", DEFAULT_FILE_RETENTION_H)):
                if parse_interval_hours(props.get(prop), default) + 1e-9 < window_h:
                    raised[prop] = f"interval {math.ceil(window_h)} hours"
            if raised:
                spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ("
                          + ", ".join(f"'{k}' = '{v}'" for k, v in raised.items()) + ")")
            metrics = table.optimize().executeCompaction().first()["metrics"]
            hours, why = retain, f"the declared window ({window_h:g} h)" if retain_hours is None else "--retain-hours"
            if name in needs and needs[name][0] > hours:
                hours, why = needs[name][0], needs[name][1]
            # Delta's VACUUM rounds the retention to the nearest whole hour: round up, never down.
            hours = float(math.ceil(hours - 1e-9))
            with _session_conf(spark, {check: "false" if hours < DELTA_SAFETY_H else "true", IGNORE_RETAIN: "false"}):
                table.vacuum(hours)
            deleted = None
            for c in reversed(commits(settings, name)):
                if c.operation == "VACUUM END":
                    deleted = _int(c.metrics.get("numDeletedFiles"))
                    break
            win = window(settings, name, properties={**props, **raised})
            row = {"table": name, "files_compacted": metrics["numFilesRemoved"], "files_written": metrics["numFilesAdded"],
                   "retained_hours": round(hours, 3), "retained_because": why, "files_deleted": deleted,
                   "properties_set": raised, "oldest_version": win.oldest, "latest_version": win.latest,
                   "version": storage.version(spark, settings, name)}
            results.append(row)
            out(f"{name:<26} optimize: {row['files_compacted']} files -> {row['files_written']}; "
                f"vacuum: kept {hours:g} h of removed files ({why}), {deleted if deleted is not None else '?'} "
                f"files deleted; readable: {win.span()}"
                + (f"; set {', '.join(f'{k}={v}' for k, v in raised.items())}" if raised else ""))
        return results
    finally:
        pipeline._pidfile(settings).unlink(missing_ok=True)


# --- the commands --------------------------------------------------------------------------------

def _spark(settings: Settings):
    from lakehouse.spark import get_spark

    return get_spark("lakehouse-cli", settings)


def _history_cmd(args: argparse.Namespace) -> int:
    from lakehouse.inspect import render

    settings = get_settings()
    if args.limit < 0:
        raise ConfigError(f"--limit must be 0 or more, got {args.limit}")
    require_table(settings, args.table)
    rows, win = history(_spark(settings), settings, args.table, args.limit or None)
    if args.format == "json":
        json.dump({"table": args.table, "window": win.as_json(), "history": rows}, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    else:
        render([{k: v for k, v in r.items() if k not in ("operationParameters", "operationMetrics")} for r in rows],
               "table", sys.stdout)
        print(win.describe())
    return 0


def _version_or_time(text: str) -> tuple[int | None, str | None]:
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text), None
    return None, text


def _diff_cmd(args: argparse.Namespace) -> int:
    from lakehouse.inspect import _cell, render

    settings = get_settings()
    if args.limit < 0:
        raise ConfigError(f"--limit must be 0 or more, got {args.limit}")
    require_table(settings, args.table)
    win = window(settings, args.table)
    v1 = resolve(settings, args.table, **dict(zip(("version", "as_of"), _version_or_time(args.from_))), win=win)
    v2 = resolve(settings, args.table, **dict(zip(("version", "as_of"), _version_or_time(args.to))), win=win)
    d = diff(_spark(settings), settings, args.table, v1, v2)
    data = diff_json(d, args.limit or None)
    if args.format == "json":
        json.dump(data, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
        return 0
    c = data["counts"]
    print(f"{args.table}: version {v1} -> {v2} ({d.method}): {c['inserted']} inserted, {c['deleted']} deleted, "
          f"{c['updated']} updated")
    if d.note:
        print(f"note: {d.note}")
    for group in ("inserted", "deleted"):
        if c[group]:
            print(f"\n{group} ({c[group]}{', first ' + str(args.limit) if args.limit and c[group] > args.limit else ''}):")
            render(data[group], "table", sys.stdout)
    if c["updated"]:
        print(f"\nupdated ({c['updated']}{', first ' + str(args.limit) if args.limit and c['updated'] > args.limit else ''}):")
        lines = []
        for u in data["updated"]:
            key = ", ".join(f"{k}={_cell(v)}" for k, v in u["key"].items())
            for col in u["changed"]:
                lines.append({"key": key, "column": col, "before": u["before"][col], "after": u["after"][col]})
        render(lines, "table", sys.stdout)
    return 0


def _confirm_on_tty(text: str) -> bool:
    print(text)
    try:
        answer = input("proceed? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _restore_cmd(args: argparse.Namespace) -> int:
    settings = get_settings()
    require_table(settings, args.table)
    _refuse_if_streaming(settings, "restoring a table")
    resolve(settings, args.table, version=args.version)
    confirm = None
    if not args.yes:
        if not (sys.stdin and sys.stdin.isatty()):
            raise ConfigError("restore asks for confirmation but stdin is not a terminal; pass --yes to restore "
                              "without asking")
        confirm = _confirm_on_tty
    restore(_spark(settings), settings, args.table, args.version, confirm=confirm)
    return 0


def _maintain_cmd(args: argparse.Namespace) -> int:
    settings = get_settings()
    retention_hours(settings, args.retain_hours)  # refused before Spark starts
    _refuse_if_streaming(settings, "maintenance")
    maintain(_spark(settings), settings, args.retain_hours)
    return 0


def _query_cmd(args: argparse.Namespace) -> int:
    """`lakehouse query`, with the version or time checked against what is readable first."""
    from lakehouse import inspect

    settings = get_settings()
    if args.limit is not None and args.limit < 0:
        raise ConfigError(f"--limit must be 0 or more, got {args.limit}")
    require_table(settings, args.table)
    version = resolve(settings, args.table, version=args.version, as_of=args.as_of) \
        if args.version is not None or args.as_of is not None else None
    df = inspect.snapshot(_spark(settings), settings, args.table, version=version)
    rows = [r.asDict(recursive=True) for r in (df.limit(args.limit) if args.limit else df).collect()]
    inspect.render(rows, args.format, sys.stdout)  # the current stdout, not the one at import
    return 0


def add_commands(sub) -> None:
    """Register this module's subcommands on the `lakehouse` parser."""
    h = sub.add_parser("history", help="a table's versions: time, operation, rows added/removed/updated",
                       description="A table's Delta history, newest first, with what each version changed (from "
                                   "Delta's operation metrics), and the versions time travel can still reach.")
    h.add_argument("table", help="e.g. gold.server_state")
    h.add_argument("--limit", type=int, default=20, help="the newest N versions (0: all; default 20)")
    h.add_argument("--format", choices=("table", "json"), default="table")
    h.set_defaults(func=_history_cmd)

    d = sub.add_parser("diff", help="rows inserted, deleted and updated between two versions of a table",
                       description="What changed between two versions (or times) of a table: from the Change Data "
                                   "Feed for gold tables, aggregated per key; by the declared keys otherwise.")
    d.add_argument("table", help="e.g. gold.status_by_location")
    d.add_argument("--from", dest="from_", required=True, metavar="VERSION|TIME",
                   help="the older version (or an ISO 8601 time)")
    d.add_argument("--to", required=True, metavar="VERSION|TIME", help="the newer version (or an ISO 8601 time)")
    d.add_argument("--limit", type=int, default=20, help="rows shown per group (0: all; default 20)")
    d.add_argument("--format", choices=("table", "json"), default="table")
    d.set_defaults(func=_diff_cmd)

    r = sub.add_parser("restore", help="roll a table back to a version; the pipeline is brought back in line",
                       description="Roll a table back to a past version (Delta RESTORE). Refused while `lakehouse "
                                   "stream` runs. Gold is then recomputed from silver; a silver restore judges again "
                                   "the bronze rows it no longer accounts for; a bronze restore re-reads from Kafka "
                                   "the records it lacks. The streams resume where they should. See "
                                   "lakehouse/timetravel.py for the rule.")
    r.add_argument("table", help="e.g. silver.events")
    r.add_argument("--version", type=int, required=True, help="the version to go back to")
    r.add_argument("--yes", action="store_true", help="do not ask for confirmation (needed without a terminal)")
    r.set_defaults(func=_restore_cmd)

    m = sub.add_parser("maintain", help="compact (OPTIMIZE) and VACUUM every table, within the time-travel window",
                       description="OPTIMIZE and VACUUM every table. Refused while `lakehouse stream` runs. Never "
                                   "keeps less than the declared time-travel window (LAKEHOUSE_TIME_TRAVEL_DAYS), "
                                   "and keeps more where a stream or the PostgreSQL sync still needs older files.")
    m.add_argument("--retain-hours", type=float, metavar="H",
                   help="keep removed files this long, rounded up to whole hours (default and minimum: "
                        "LAKEHOUSE_TIME_TRAVEL_DAYS x 24)")
    m.set_defaults(func=_maintain_cmd)

    # `lakehouse query` is defined in lakehouse/cli.py; its version/time goes through the same
    # checks as the commands above (a clear line with the readable range, exit 2).
    if "query" in sub.choices:
        sub.choices["query"].set_defaults(func=_query_cmd)
