#!/usr/bin/env bash
# Installs whatever this machine lacks for the project; safe to run again (make setup).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# System packages: Java 17 (Kafka, Spark), Maven (fetches the Kafka jars), Chromium (browser tests).
need=()
java -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])' || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing system packages: ${need[*]}; install them (sudo apt-get install ${need[*]}) and run make setup again" >&2
    exit 1
  fi
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "error: Python 3.11 is required (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PYTHON" -m venv .venv
fi
say "installing Python packages (pinned by constraints.txt)"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
.venv/bin/python -m pip check

# Front-end assets of the dashboard: the npm packages pinned by package-lock.json, copied
# into dashboard/static/vendor/ (git-ignored), from where Django serves them: no CDN.
if ! command -v npm >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: npm not found; install Node.js 18 or newer (sudo apt-get install nodejs npm) and run make setup again" >&2
    exit 1
  fi
  say "installing nodejs npm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
say "installing front-end packages (pinned by package-lock.json)"
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
vendor=dashboard/static/vendor
rm -rf "$vendor"
mkdir -p "$vendor"/echarts "$vendor"/jquery "$vendor"/jquery-ui "$vendor"/pivottable
cp node_modules/echarts/dist/echarts.min.js node_modules/echarts/LICENSE "$vendor"/echarts/
cp node_modules/jquery/dist/jquery.min.js node_modules/jquery/LICENSE.txt "$vendor"/jquery/
cp node_modules/jquery-ui/dist/jquery-ui.min.js node_modules/jquery-ui/LICENSE.txt "$vendor"/jquery-ui/
cp node_modules/pivottable/dist/pivot.min.js node_modules/pivottable/dist/pivot.min.css node_modules/pivottable/LICENSE.md "$vendor"/pivottable/
# Flexmonster loads its toolbar, themes and libraries from its component folder: copy it whole.
cp -R node_modules/flexmonster "$vendor"/flexmonster
# Great Expectations Data Docs (`lakehouse dq report`) load these from CDNs by default; the
# report copies them from here and points its pages at the local copies (lakehouse/quality.py).
dd="$vendor"/datadocs
mkdir -p "$dd"/bootstrap "$dd"/bootstrap-table "$dd"/bootstrap-datepicker "$dd"/bootstrap-dark "$dd"/popper "$dd"/vega "$dd"/jquery "$dd"/fontawesome
cp node_modules/bootstrap/dist/css/bootstrap.min.css node_modules/bootstrap/dist/js/bootstrap.min.js node_modules/bootstrap/LICENSE "$dd"/bootstrap/
cp node_modules/bootstrap-table/dist/bootstrap-table.min.css node_modules/bootstrap-table/dist/bootstrap-table.min.js \
   node_modules/bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.min.css \
   node_modules/bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.min.js node_modules/bootstrap-table/LICENSE "$dd"/bootstrap-table/
cp node_modules/bootstrap-datepicker/dist/css/bootstrap-datepicker.min.css node_modules/bootstrap-datepicker/dist/js/bootstrap-datepicker.min.js \
   node_modules/bootstrap-datepicker/LICENSE "$dd"/bootstrap-datepicker/
cp node_modules/@forevolve/bootstrap-dark/dist/css/bootstrap-prefers-dark.css node_modules/@forevolve/bootstrap-dark/LICENSE "$dd"/bootstrap-dark/
cp node_modules/popper.js/dist/umd/popper.min.js "$dd"/popper/
cp node_modules/vega/build/vega.min.js node_modules/vega-lite/build/vega-lite.min.js node_modules/vega-embed/build/vega-embed.min.js "$dd"/vega/
cp node_modules/jquery/dist/jquery.min.js "$dd"/jquery/
cp -R node_modules/@fortawesome/fontawesome-free/css node_modules/@fortawesome/fontawesome-free/webfonts \
   node_modules/@fortawesome/fontawesome-free/LICENSE.txt "$dd"/fontawesome/
say "setup done"
