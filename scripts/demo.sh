#!/usr/bin/env bash
# demo.sh - try hpcgw on one machine (Debian 12 or 13): installs Python if it is missing, makes
# .venv in this clone, installs hpcgw into it and runs `hpcgw demo`: SQLite, a local cluster and
# a demo consortium in ./hpcgw-data, served on http://127.0.0.1:8000 (logins are printed).
#
# Usage: sudo scripts/demo.sh [hpcgw demo options, e.g. --port 8080 --data-dir /srv/hpcgw-demo]
#   (root is needed only when Debian packages are missing)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=$ROOT/.venv
STAMP=$VENV/.hpcgw-installed # "<extras> <sha256 of pyproject.toml>", shared with scripts/test.sh
export PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive

die() { printf 'demo.sh: %s\n' "$*" >&2; exit 1; }

missing=()
for p in python3 python3-venv python3-pip; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die "Debian packages missing: ${missing[*]}; run as root (sudo $0)"
  echo "installing ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "hpcgw needs Python 3.11 or newer (Debian 12 or 13)"

[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
# any earlier install of this pyproject.toml will do (the test extras include the base)
if [[ ! -f $STAMP || $(cut -d' ' -f2 "$STAMP") != "$hash" ]]; then
  echo "installing hpcgw into $VENV"
  "$VENV/bin/pip" install -q -e .
  echo "base $hash" >"$STAMP"
fi

exec "$VENV/bin/hpcgw" demo "$@"
