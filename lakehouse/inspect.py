"""Read the tables from the command line: list them, query one now or at a past version/time."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sys

from lakehouse import storage
from lakehouse.settings import ConfigError, Settings
from lakehouse.tables import TABLES


def _history(spark, settings: Settings, name: str):
    from delta.tables import DeltaTable

    storage.table_for(name)
    path = settings.table_path(name)
    if not DeltaTable.isDeltaTable(spark, path):
        raise ConfigError(f"table {name} does not exist yet at {path}; run `lakehouse stream` first")
    return DeltaTable.forPath(spark, path).history().select("version", "timestamp").orderBy("version").collect()


def tables(spark, settings: Settings) -> list[dict]:
    from delta.tables import DeltaTable

    out = []
    for name in TABLES:
        path = settings.table_path(name)
        if DeltaTable.isDeltaTable(spark, path):
            out.append({"table": name, "version": storage.version(spark, settings, name),
                        "rows": storage.read(spark, settings, name).count()})
        else:
            out.append({"table": name, "version": None, "rows": None})
    return out


def _parse_time(text: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"cannot parse timestamp {text!r}; use ISO 8601, e.g. 2026-11-28T10:05:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def snapshot(spark, settings: Settings, name: str, *, version: int | None = None, as_of: str | None = None):
    """The table now, at a version, or as of a time; a version or time outside what is kept is refused."""
    history = _history(spark, settings, name)
    first, last = history[0], history[-1]
    span = (f"versions {first['version']}..{last['version']} "
            f"({first['timestamp']:%Y-%m-%dT%H:%M:%S}Z .. {last['timestamp']:%Y-%m-%dT%H:%M:%S}Z)")
    reader = spark.read.format("delta")
    if version is not None:
        if not first["version"] <= version <= last["version"]:
            raise ConfigError(f"{name} has no version {version}; available: {span}")
        reader = reader.option("versionAsOf", version)
    elif as_of is not None:
        when = _parse_time(as_of)
        if when < first["timestamp"].replace(tzinfo=dt.UTC):
            raise ConfigError(f"{name} did not exist yet at {as_of}; available: {span}")
        reader = reader.option("timestampAsOf", when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f"))
    return reader.load(settings.table_path(name))


def _jsonable(value):
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "asDict"):
        return {k: _jsonable(v) for k, v in value.asDict().items()}
    return value


def render(rows: list[dict], fmt: str, out=sys.stdout) -> None:
    rows = [{k: _jsonable(v) for k, v in r.items()} for r in rows]
    if fmt == "json":
        json.dump(rows, out, indent=1, default=str)
        out.write("\n")
    elif fmt == "csv":
        if rows:
            w = csv.DictWriter(out, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        if not rows:
            out.write("(no rows)\n")
            return
        cols = list(rows[0])
        cells = [[_cell(r[c]) for c in cols] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        out.write("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip() + "\n")
        for row in cells:
            out.write("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() + "\n")


def _cell(value) -> str:
    text = "" if value is None else (json.dumps(value) if isinstance(value, (list, dict)) else str(value))
    text = text.replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def to_text(rows: list[dict], fmt: str) -> str:
    buf = io.StringIO()
    render(rows, fmt, buf)
    return buf.getvalue()
