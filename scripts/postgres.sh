#!/usr/bin/env bash
# postgres.sh - a PostgreSQL server for the test suite, from Debian's package, on loopback.
#
# Usage (as root): scripts/postgres.sh [up|down|status|url]     (default: up)
#   up      install the package if missing, initialise a cluster in $PG_DATA, start it on
#           127.0.0.1:$PG_PORT (trust auth, loopback only). Idempotent; safe to run concurrently.
#   down    stop that server (pg_ctl, by its own pid file in $PG_DATA).
#   url     print the SQLAlchemy URL of its maintenance database.
set -euo pipefail

PG_PORT=${PG_PORT:-55432}
PG_DATA=${PG_DATA:-/var/lib/hpcgw-test/postgres}
PG_RUN=${PG_RUN:-/run/hpcgw-test-postgres}
LOCK=/run/hpcgw-test-postgres.lock

log() { printf '[postgres.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root"

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [[ -n $d && -x $d/pg_ctl ]] && echo "$d"
}

install_pg() {
  if pg_bindir >/dev/null; then return; fi
  log "installing postgresql (Debian package)"
  local own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends postgresql >/tmp/hpcgw-pg-apt.log 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends postgresql >/tmp/hpcgw-pg-apt.log 2>&1; } \
    || { ((own_policy)) && rm -f /usr/sbin/policy-rc.d; tail -20 /tmp/hpcgw-pg-apt.log; die "apt-get install postgresql failed"; }
  ((own_policy)) && rm -f /usr/sbin/policy-rc.d
  pg_bindir >/dev/null || die "postgresql installed but pg_ctl not found"
}

# 9>&-: the server must not inherit the lock's descriptor, or it would hold the lock forever
pgctl() { runuser -u postgres -- "$(pg_bindir)/pg_ctl" -D "$PG_DATA" "$@" 9>&-; }

is_up() { [[ -s $PG_DATA/postmaster.pid ]] && pgctl status >/dev/null 2>&1; }

do_up() {
  install_pg
  exec 9>"$LOCK"; flock 9
  if is_up; then log "already running on 127.0.0.1:$PG_PORT"; return; fi
  install -d -m 700 -o postgres -g postgres "$PG_DATA"
  install -d -m 775 -o postgres -g postgres "$PG_RUN"
  if [[ ! -s $PG_DATA/PG_VERSION ]]; then
    runuser -u postgres -- "$(pg_bindir)/initdb" -D "$PG_DATA" -U postgres --auth=trust \
      --encoding=UTF8 --locale=C.UTF-8 >/tmp/hpcgw-pg-initdb.log 2>&1 \
      || { cat /tmp/hpcgw-pg-initdb.log; die "initdb failed"; }
  fi
  # tuned for throwaway test databases: durability off, more connections for the race tests
  pgctl -w -t 60 -l "$PG_DATA/server.log" start -o "-p $PG_PORT -k $PG_RUN \
    -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off -c max_connections=300" >/dev/null \
    || { tail -20 "$PG_DATA/server.log"; die "postgres did not start"; }
  log "up on 127.0.0.1:$PG_PORT (data $PG_DATA)"
}

do_down() {
  if ! pg_bindir >/dev/null || ! is_up; then log "not running"; return; fi
  pgctl -w -t 60 -m fast stop >/dev/null
  log "stopped"
}

case ${1:-up} in
  up) do_up ;;
  down) do_down ;;
  status) if is_up; then echo "running on 127.0.0.1:$PG_PORT"; else echo "stopped"; exit 3; fi ;;
  url) echo "postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/postgres" ;;
  *) echo "usage: $0 [up|down|status|url]" >&2; exit 2 ;;
esac
