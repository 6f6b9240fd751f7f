"""JVM dependencies, fetched once from Maven Central with ``mvn`` and cached for offline runs.

Both the Kafka broker and Spark's Delta and Kafka connectors come this way: a small
generated pom, ``dependency:copy-dependencies`` into ``$LAKEHOUSE_CACHE/<name>/libs``,
and a marker that records exactly what was resolved.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from lakehouse.settings import ConfigError, Settings

log = logging.getLogger(__name__)

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.lakehouse</groupId><artifactId>{name}</artifactId><version>1</version>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""


def _dependency(coordinate: str, excludes: tuple[str, ...] = ()) -> str:
    group, artifact, version = coordinate.split(":")
    exclusions = "".join(f"<exclusion><groupId>{e.split(':')[0]}</groupId><artifactId>{e.split(':')[1]}</artifactId>"
                         f"</exclusion>" for e in excludes)
    return (f"    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId><version>{version}</version>"
            + (f"<exclusions>{exclusions}</exclusions>" if exclusions else "") + "</dependency>")


def resolve(settings: Settings, name: str, dependencies: dict[str, tuple[str, ...]]) -> list[Path]:
    """The jars of ``dependencies`` (coordinate -> excluded group:artifact), with their runtime
    dependencies; resolved with Maven on first use, from the cache afterwards."""
    libs = settings.cache / name / "libs"
    marker = libs / ".resolved"
    wanted = "\n".join(f"{c} -{','.join(e)}" for c, e in dependencies.items())
    if marker.exists() and marker.read_text() == wanted:
        return sorted(libs.glob("*.jar"))
    if not shutil.which("mvn"):
        raise ConfigError("Maven (mvn) not found, needed once to fetch the JVM jars: run `make setup`")
    build = libs.parent
    build.mkdir(parents=True, exist_ok=True)
    pom = POM.format(name=name, dependencies="\n".join(_dependency(c, e) for c, e in dependencies.items()))
    (build / "pom.xml").write_text(pom)
    log.info("resolving %s from Maven Central into %s", ", ".join(dependencies), libs)
    shutil.rmtree(libs, ignore_errors=True)
    r = subprocess.run(["mvn", "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={libs}",
                        "-DincludeScope=runtime"], cwd=build, capture_output=True, text=True)
    if r.returncode != 0:
        missing = [line for line in r.stdout.splitlines() if "Could not" in line or "Missing" in line][:1]
        raise ConfigError(f"cannot resolve {', '.join(dependencies)} from Maven Central (cache: {libs}, "
                          f"Maven's: ~/.m2){': ' + missing[0].strip() if missing else ''}; "
                          "check the network or the cache")
    marker.write_text(wanted)
    return sorted(libs.glob("*.jar"))
