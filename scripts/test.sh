#!/usr/bin/env bash
# test.sh - every check of hpcgw, as CI runs it (.ci/run): installs what the tests need,
# brings up PostgreSQL and the local Slurm test cluster, then runs ruff, mypy, lint-imports,
# `alembic check` on a fresh SQLite and a fresh PostgreSQL database, and pytest on SQLite then on
# PostgreSQL.
#
# Usage (as root, on Debian 12 or 13, from anywhere in a clone): scripts/test.sh [PYTEST ARGS]
#   Extra arguments go to both pytest runs (e.g. `scripts/test.sh tests/cli -x`).
#   With CI=true a skipped test counts as a failure (tests/conftest.py).
# Exit status 0 only if every check passed. Each installation step is idempotent and quick when
# its work is done already (pip runs only when pyproject.toml changed since the last install).
# PostgreSQL and the test cluster are left running for the next run; stop them with
#   scripts/testcluster.sh down; scripts/postgres.sh down
set -uo pipefail # no -e: a failing check must not hide the others; setup failures exit below

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
VENV=$ROOT/.venv
STAMP=$VENV/.hpcgw-installed # "<extras> <sha256 of pyproject.toml>" of the last pip install
DEBIAN_PACKAGES=(python3 python3-venv python3-pip chromium wrk)
export PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive

T_START=$EPOCHREALTIME
RESULTS=()
FAILED=0

log() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# record NAME STARTED RC: the outcome of a step, for the summary
record() {
  local name=$1 started=$2 rc=$3
  if ((rc == 0)); then
    RESULTS+=("$(printf '%-40s ok      %7ss' "$name" "$(elapsed "$started")")")
  else
    RESULTS+=("$(printf '%-40s FAILED  %7ss  (exit %d)' "$name" "$(elapsed "$started")" "$rc")")
    FAILED=$((FAILED + 1))
  fi
  return "$rc"
}

# phase NAME CMD...: run one step, time it and record the outcome
phase() {
  local name=$1 started=$EPOCHREALTIME rc
  shift
  log "$name"
  "$@"
  rc=$?
  record "$name" "$started" "$rc"
}

summary() {
  printf '\n\033[1m== summary\033[0m\n'
  printf '  %s\n' "${RESULTS[@]}"
  printf '  %-40s         %7ss\n' "total" "$(elapsed "$T_START")"
  printf '\nPostgreSQL and the Slurm test cluster are still running; to stop them:\n'
  printf '  scripts/testcluster.sh down; scripts/postgres.sh down\n'
  if ((FAILED)); then
    printf '\n\033[1;31m%d check(s) FAILED\033[0m\n' "$FAILED"
  else
    printf '\n\033[1;32mall checks passed\033[0m\n'
  fi
}

# setup NAME CMD...: a step the checks depend on; its failure ends the run
setup() { phase "$@" || { summary; exit 1; }; }

install_debian_packages() {
  local p missing=()
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || { echo "present: ${DEBIAN_PACKAGES[*]}"; return 0; }
  echo "installing ${missing[*]}"
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/hpcgw-test-apt.log 2>&1 \
    || { apt-get update -q >>/tmp/hpcgw-test-apt.log 2>&1 \
      && apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/hpcgw-test-apt.log 2>&1; } \
    || { tail -20 /tmp/hpcgw-test-apt.log; return 1; }
}

# `status` first: `up` waits on a lock that a server it started keeps holding (fd inherited)
postgres_up() { scripts/postgres.sh status >/dev/null || scripts/postgres.sh up; }

python_environment() {
  local wanted
  [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV" || return 1
  wanted="dev $(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [[ -f $STAMP && $(<"$STAMP") == "$wanted" ]]; then
    echo "up to date with pyproject.toml"
    return 0
  fi
  "$VENV/bin/pip" install -q -e '.[dev]' || return 1
  echo "$wanted" >"$STAMP"
}

# alembic_check URL: upgrade an empty database to head, then `alembic check` (no drift)
alembic_check() {
  local secret
  secret=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(48))')
  export HPCGW_DATABASE_URL=$1 HPCGW_SECRET_KEY=$secret # in this function's subshell only
  "$VENV/bin/hpcgw" db upgrade && "$VENV/bin/hpcgw" db check
}

alembic_check_sqlite() {
  local dir rc
  dir=$(mktemp -d)
  (alembic_check "sqlite:///$dir/check.db")
  rc=$?
  rm -rf "$dir"
  return "$rc"
}

alembic_check_postgresql() {
  local name="hpcgw_alembic_check_$$" url admin rc
  url=$(scripts/postgres.sh url)     # SQLAlchemy's URL of the maintenance database
  admin=${url/+psycopg/}             # the same for libpq (psql)
  psql -X -q -v ON_ERROR_STOP=1 -d "$admin" \
    -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" || return 1
  (alembic_check "${url%/*}/$name")
  rc=$?
  psql -X -q -d "$admin" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)"
  return "$rc"
}

if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/test.sh: run as root (it installs Debian packages and starts test services)" >&2
  exit 1
fi

setup "Debian packages" install_debian_packages
setup "PostgreSQL (scripts/postgres.sh up)" postgres_up
setup "Slurm test cluster (testcluster.sh up)" scripts/testcluster.sh up
setup "PyTorch for the cluster's jobs (torch-env.sh)" scripts/torch-env.sh
setup "Python environment (.venv)" python_environment

phase "ruff check" "$VENV/bin/ruff" check .
phase "mypy (strict)" "$VENV/bin/mypy"
phase "lint-imports (package contracts)" "$VENV/bin/lint-imports"
phase "alembic check, SQLite" alembic_check_sqlite
phase "alembic check, PostgreSQL" alembic_check_postgresql
# The tests that need no cluster run on two xdist workers; the cluster's run one at a time, as
# some stop its daemons or change its accounts' limits, which would upset a neighbour's jobs.
# pytest's exit code 5 (nothing selected, e.g. for a path holding only one kind) is not a failure.
pytest_part() { # pytest_part sqlite|postgresql free|cluster [PYTEST ARGS]
  local db=$1 part=$2 code
  shift 2
  if [[ $part == free ]]; then
    HPCGW_TEST_DB=$db "$VENV/bin/python" -m pytest -p no:cacheprovider -n 2 --durations=15 \
      -m "not slurm" "$@"
  else
    HPCGW_TEST_DB=$db "$VENV/bin/python" -m pytest -p no:cacheprovider --durations=15 \
      -m slurm "$@"
  fi
  code=$?
  ((code == 0 || code == 5))
}

phase "pytest without the cluster, SQLite" pytest_part sqlite free "$@"
# The SQLite run's cluster tests mostly wait on Slurm: the PostgreSQL run's tests without the
# cluster use the cores meanwhile (the two share nothing: no cluster, databases of their own).
# The cluster tests' output follows once both have ended.
log "pytest on the cluster, SQLite (beside the next step; its output after it)"
cluster_log=$(mktemp)
cluster_started=$EPOCHREALTIME
pytest_part sqlite cluster "$@" >"$cluster_log" 2>&1 &
cluster_pid=$!
phase "pytest without the cluster, PostgreSQL" pytest_part postgresql free "$@"
wait "$cluster_pid"
cluster_rc=$?
log "pytest on the cluster, SQLite: its output"
cat "$cluster_log"
rm -f "$cluster_log"
record "pytest on the cluster, SQLite" "$cluster_started" "$cluster_rc"
phase "pytest on the cluster, PostgreSQL" pytest_part postgresql cluster "$@"

summary
((FAILED == 0))
