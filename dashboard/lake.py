"""The Delta tables themselves, read with delta-rs (the ``deltalake`` package): a table at a
version or time, its history, and what changed between two versions. For the time-travel page.

No JVM: delta-rs reads the tables in this process, and SQL (ordering, paging, joins) runs in
its embedded DataFusion engine. Versions, times and the readable range come from
``lakehouse.timetravel`` (pure Python over the Delta log), so the page and the ``lakehouse``
commands agree on what ``--as-of`` means and on what is still readable. Nothing here imports
pyspark. The table root is LAKEHOUSE_ROOT, read on every call (``get_settings()``).

Validation errors raise ``BadParam`` (HTTP 400); a table delta-rs cannot read raises
``Unreadable`` with delta-rs' own message.
"""

from __future__ import annotations

import datetime as dt
import math

from dashboard.params import BadParam
from lakehouse import timetravel as tt
from lakehouse.settings import ConfigError, get_settings
from lakehouse.tables import TABLES, Table

MAX_CELL_TEXT = 300  # characters of a text or binary value sent to the browser


class Unreadable(Exception):
    """delta-rs could not open or read a table (an unsupported table feature, say)."""


def _settings():
    return get_settings()


def _table(name: str | None) -> Table:
    if not name:
        raise BadParam(f"table is required; one of {', '.join(TABLES)}")
    if name not in TABLES:
        raise BadParam(f"unknown table {name!r}; one of {', '.join(TABLES)}")
    return TABLES[name]


def _open(settings, name: str, version: int | None = None):
    from deltalake import DeltaTable

    try:
        return DeltaTable(str(tt.local_path(settings.table_path(name))), version=version)
    except Exception as e:  # noqa: BLE001 - reported to the page as is
        raise Unreadable(f"delta-rs cannot read {name}: {str(e).strip().splitlines()[0][:300]}") from None


def _quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _cell(value):
    """A value from Arrow made safe for JSON: bytes as (replaced) UTF-8 text, long text cut, no NaN."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        return value if len(value) <= MAX_CELL_TEXT else value[:MAX_CELL_TEXT - 1] + "…"
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dt.datetime):
        value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _cell(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_cell(v) for v in value]
    return value


def _records(table) -> list[dict]:
    """An arro3 Table as a list of dicts of Python values."""
    names = table.column_names
    columns = [table.column(n).to_pylist() for n in names]
    return [dict(zip(names, values)) for values in zip(*columns)]


def _sql(tables: dict, query: str) -> list[dict]:
    from deltalake import QueryBuilder

    qb = QueryBuilder()
    for alias, table in tables.items():
        qb = qb.register(alias, table)
    try:
        return _records(qb.execute(query).read_all())
    except Exception as e:  # noqa: BLE001
        raise Unreadable(f"delta-rs could not run the query: {str(e).strip().splitlines()[0][:300]}") from None


def _version(settings, name: str, version: int | None, as_of: dt.datetime | None) -> tuple[int, tt.Window]:
    try:
        win = tt.window(settings, name)
        return tt.resolve(settings, name, version=version, as_of=as_of, win=win), win
    except ConfigError as e:
        raise BadParam(str(e)) from None


def _require(settings, name: str) -> Table:
    table = _table(name)
    if not tt.exists(settings, name):
        raise BadParam(f"table {name} does not exist yet at {settings.table_path(name)}; start the pipeline first")
    return table


# --- selectors ------------------------------------------------------------------------------

def tables() -> list[dict]:
    """Every declared table: whether it exists, its latest version, change data feed, and
    whether delta-rs can read it (with its protocol)."""
    settings = _settings()
    out = []
    for name, table in TABLES.items():
        row = {"table": name, "layer": table.layer, "keys": list(table.keys), "columns": table.column_names,
               "exists": tt.exists(settings, name), "version": None, "change_data_feed": None,
               "readable": None, "protocol": None, "error": None}
        if row["exists"]:
            try:
                dt_ = _open(settings, name)
                protocol = dt_.protocol()
                row.update(version=dt_.version(), readable=True,
                           change_data_feed=(dt_.metadata().configuration or {}).get(
                               "delta.enableChangeDataFeed", "false").lower() == "true",
                           protocol={"min_reader_version": protocol.min_reader_version,
                                     "min_writer_version": protocol.min_writer_version,
                                     "reader_features": list(protocol.reader_features or []),
                                     "writer_features": list(protocol.writer_features or [])})
            except Unreadable as e:
                row.update(readable=False, error=str(e))
        out.append(row)
    return out


def history(name: str, *, limit: int = 50, offset: int = 0) -> dict:
    """A table's versions, newest first (Delta's commit info with rows and files added, removed,
    updated), and the range time travel can still read."""
    settings = _settings()
    _require(settings, name)
    log = tt.commits(settings, name)
    win = tt.window(settings, name, log=log, properties=_properties(settings, name))
    newest_first = list(reversed(log))
    page = newest_first[offset:offset + limit]
    rows = []
    for c in page:
        row = tt.history_row(c.version, c.timestamp, c.operation, c.parameters, c.metrics)
        row["readable"] = c.version >= win.oldest
        rows.append(row)
    return {"table": name, "window": win.as_json(), "total": len(log), "limit": limit, "offset": offset,
            "rows": rows}


def _properties(settings, name: str) -> dict:
    try:
        return dict(_open(settings, name).metadata().configuration or {})
    except Unreadable:
        return {}


def rows(name: str, *, version: int | None = None, as_of: dt.datetime | None = None, limit: int = 50,
         offset: int = 0) -> dict:
    """One page of a table's rows at a version (or as of a time; default: the latest), in key order."""
    settings = _settings()
    table = _require(settings, name)
    v, win = _version(settings, name, version, as_of)
    delta = _open(settings, name, v)
    total = _sql({"t": delta}, "SELECT count(*) AS n FROM t")[0]["n"]
    order = ", ".join(_quote(k) for k in table.keys)
    columns = ", ".join(_quote(c) for c in table.column_names)
    page = _sql({"t": delta}, f"SELECT {columns} FROM t ORDER BY {order} LIMIT {int(limit)} OFFSET {int(offset)}")
    return {"table": name, "version": v, "timestamp": win.times[v], "latest_version": win.latest,
            "keys": list(table.keys), "columns": table.column_names, "total": total, "limit": limit,
            "offset": offset, "rows": [{k: _cell(val) for k, val in r.items()} for r in page]}


# --- diff -------------------------------------------------------------------------------------

def _key(table: Table, row: dict) -> tuple:
    return tuple(row.get(k) for k in table.keys)


def _diff_by_change_feed(settings, table: Table, v1: int, v2: int) -> tuple[list, list, list]:
    """Per key, the state before its first change after v1 and after its last change up to v2."""
    delta = _open(settings, table.name)
    try:
        changes = _records(delta.load_cdf(starting_version=v1 + 1, ending_version=v2,
                                          columns=[*table.column_names, "_change_type", "_commit_version"])
                           .read_all())
    except Exception as e:  # noqa: BLE001
        raise Unreadable(str(e).strip().splitlines()[0][:200]) from None
    old = ("delete", "update_preimage")
    changes.sort(key=lambda r: (r["_commit_version"], 0 if r["_change_type"] in old else 1))
    first: dict[tuple, dict] = {}
    last: dict[tuple, dict] = {}
    for r in changes:
        k = _key(table, r)
        first.setdefault(k, r)
        last[k] = r
    inserted, deleted, updated = [], [], []
    for k, f in first.items():
        before = {c: f[c] for c in table.column_names} if f["_change_type"] in old else None
        la = last[k]
        after = {c: la[c] for c in table.column_names} if la["_change_type"] in ("insert", "update_postimage") else None
        _place(before, after, inserted, deleted, updated)
    return inserted, deleted, updated


def _place(before, after, inserted, deleted, updated) -> None:
    if before is None and after is not None:
        inserted.append(after)
    elif before is not None and after is None:
        deleted.append(before)
    elif before is not None and after is not None and before != after:
        updated.append((before, after))


def _diff_by_keys(settings, table: Table, v1: int, v2: int) -> tuple[list, list, list]:
    """The two versions joined on the declared keys (in DataFusion); changed rows compared here."""
    a, b = _open(settings, table.name, v1), _open(settings, table.name, v2)
    on = " AND ".join(f"(a.{_quote(k)} IS NOT DISTINCT FROM b.{_quote(k)})" for k in table.keys)
    keys_a = ", ".join(f"a.{_quote(k)}" for k in table.keys)
    cols = ", ".join(_quote(c) for c in table.column_names)
    inserted = _sql({"a": a, "b": b}, f"SELECT {', '.join('b.' + _quote(c) for c in table.column_names)} FROM b "
                                      f"LEFT JOIN (SELECT {cols}, true AS _hit FROM a) a ON {on} WHERE a._hit IS NULL")
    deleted = _sql({"a": a, "b": b}, f"SELECT {', '.join('a.' + _quote(c) for c in table.column_names)} FROM a "
                                     f"LEFT JOIN (SELECT {cols}, true AS _hit FROM b) b ON {on} WHERE b._hit IS NULL")
    values = [c for c in table.column_names if c not in table.keys]
    pairs = _sql({"a": a, "b": b},
                 f"SELECT {keys_a}, "
                 + ", ".join(f"a.{_quote(c)} AS {_quote('before.' + c)}, b.{_quote(c)} AS {_quote('after.' + c)}"
                             for c in values)
                 + f" FROM a JOIN b ON {on}")
    updated = []
    for p in pairs:
        before = {c: (p[c] if c in table.keys else p["before." + c]) for c in table.column_names}
        after = {c: (p[c] if c in table.keys else p["after." + c]) for c in table.column_names}
        if before != after:
            updated.append((before, after))
    return inserted, deleted, updated


def diff(name: str, v1: int, v2: int, *, limit: int = 50) -> dict:
    """Rows inserted, deleted and updated from version v1 to v2 (either order): from the Change
    Data Feed where the table has it, else by the declared keys; counts and up to ``limit`` rows
    per group, in key order."""
    settings = _settings()
    table = _require(settings, name)
    win = tt.window(settings, name)
    for v in (v1, v2):
        _version(settings, name, v, None)
    lo, hi = min(v1, v2), max(v1, v2)
    method, note = "key comparison", None
    result = None
    if lo < hi and _cdf_between(settings, name, lo, hi):
        try:
            result = _diff_by_change_feed(settings, table, lo, hi)
            method = "change data feed"
        except Unreadable as e:
            note = f"change data feed not readable ({e}); compared by keys"
    if result is None:
        result = _diff_by_keys(settings, table, lo, hi) if lo < hi else ([], [], [])
    inserted, deleted, updated = result
    if v1 > v2:
        inserted, deleted, updated = deleted, inserted, [(after, before) for before, after in updated]
    inserted.sort(key=lambda r: _sortable(_key(table, r)))
    deleted.sort(key=lambda r: _sortable(_key(table, r)))
    updated.sort(key=lambda p: _sortable(_key(table, p[0])))
    return {
        "table": name, "from_version": v1, "to_version": v2, "method": method, "note": note,
        "from_time": win.times[v1], "to_time": win.times[v2],
        "keys": list(table.keys), "columns": table.column_names,
        "counts": {"inserted": len(inserted), "deleted": len(deleted), "updated": len(updated)},
        "limit": limit,
        "inserted": [_clean(r) for r in inserted[:limit]],
        "deleted": [_clean(r) for r in deleted[:limit]],
        "updated": [{"key": {k: _cell(before[k]) for k in table.keys},
                     "changed": [c for c in table.column_names if before[c] != after[c]],
                     "before": _clean(before), "after": _clean(after)} for before, after in updated[:limit]],
    }


def _clean(row: dict) -> dict:
    return {k: _cell(v) for k, v in row.items()}


def _sortable(key: tuple) -> tuple:
    return tuple((v is not None, str(v) if not isinstance(v, (int, float)) else v) for v in key)


def _cdf_between(settings, name: str, lo: int, hi: int) -> bool:
    if str(_properties(settings, name).get("delta.enableChangeDataFeed", "false")).lower() != "true":
        return False
    for c in tt.commits(settings, name):
        if lo < c.version <= hi and c.operation in ("SET TBLPROPERTIES", "UNSET TBLPROPERTIES") \
                and "enableChangeDataFeed" in str(c.parameters):
            return False
    return True
