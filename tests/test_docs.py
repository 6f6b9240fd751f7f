"""The docs cannot drift from the code: generated tables, and every environment variable documented."""

from __future__ import annotations

import re
from pathlib import Path

from lakehouse.tables import markdown

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lakehouse", "simulator", "serving", "dashboard")
# os.environ.get("X") / os.environ["X"] / os.environ.setdefault("X") / os.getenv("X"), and
# lakehouse.settings' typed readers _int("X", ...) / _float("X", ...).
ENV_READ = re.compile(r"""(?:os\.environ(?:\.get|\.setdefault)?\s*[(\[]|os\.getenv\(|\b_(?:int|float)\()\s*["']([A-Z][A-Z0-9_]*)["']""")
NOT_SETTINGS = {"PATH"}  # the operating system's, read only to find java


def env_names() -> set[str]:
    names: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            names |= set(ENV_READ.findall(path.read_text(encoding="utf-8")))
    return names - NOT_SETTINGS


def test_tables_md_is_generated():
    expected = markdown()
    actual = (ROOT / "docs" / "tables.md").read_text(encoding="utf-8")
    assert actual == expected, ("docs/tables.md is out of date; regenerate it with\n"
                                ".venv/bin/python -c 'from lakehouse.tables import markdown; "
                                "print(markdown(), end=\"\")' > docs/tables.md")


def test_every_environment_variable_is_documented():
    names = env_names()
    assert {"LAKEHOUSE_HOME", "KAFKA_BOOTSTRAP_SERVERS", "DJANGO_SECRET_KEY", "LAKEHOUSE_DEDUP_HORIZON_HOURS"} <= names
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", doc, flags=re.M))
    assert not names - documented, f"not in the table of docs/configuration.md: {sorted(names - documented)}"
