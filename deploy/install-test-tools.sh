#!/usr/bin/env bash
# What `make test` needs besides the virtualenv, from Debian's archive when missing (`make test-tools`):
# Java and Maven (Apache Kafka's jars), Chromium (the live-page browser test), promtool (the Prometheus
# config checks), PostgreSQL's server binaries (the history store's tests) and python3-venv. As root it
# installs what is missing; as anyone else it stops with one line saying what to run. Nothing missing: silent.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

postgres_binaries() {
  # The lookup of ecoute/postgres.py: $ECOUTE_POSTGRES_BIN, PATH, or Debian's /usr/lib/postgresql/<major>/bin.
  local dir
  for dir in "${ECOUTE_POSTGRES_BIN:-}" /usr/lib/postgresql/*/bin; do
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ] && return 0
  done
  have initdb && have pg_ctl && have postgres
}

python_venv() {
  # Debian's Python makes venvs only with python3-venv (ensurepip); an existing .venv needs nothing.
  [ -f .venv/.installed ] || "${PYTHON:-python3}" -c 'import ensurepip, venv' >/dev/null 2>&1
}

find_missing() {
  missing=()
  python_venv || missing+=(python3-venv)
  have java || missing+=(default-jre-headless)
  have mvn || missing+=(maven)
  # Debian's Chromium, the path tests/e2e/test_live_page.py drives with Playwright for Python (never
  # `playwright install`: browser downloads are not reachable from CI).
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  have promtool || missing+=(prometheus)
  postgres_binaries || missing+=(postgresql)
}

find_missing
[ ${#missing[@]} -eq 0 ] && exit 0

if ! have apt-get; then
  echo "make test needs: ${missing[*]} (Debian package names); install them with your system's package manager" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "make test needs Debian packages that are missing; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "installing the test tools that are missing: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
find_missing
if [ ${#missing[@]} -ne 0 ]; then
  echo "still missing after apt-get install: ${missing[*]}" >&2
  exit 1
fi
