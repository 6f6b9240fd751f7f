"""Structured logs: one line per event, ``time level logger message key=value ...``.

Set LAKEHOUSE_LOG_FORMAT=json for JSON lines (for a log collector).
"""

from __future__ import annotations

import json
import logging
import os
import sys


class _KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        if os.environ.get("LAKEHOUSE_LOG_FORMAT") == "json":
            return json.dumps({"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                               "message": record.getMessage(), **fields}, default=str)
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{self.formatTime(record)} {record.levelname:<5} {record.name} {record.getMessage()} {extra}".rstrip()


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("kafka", "py4j", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
