#!/usr/bin/env bash
# torch-env.sh - the Python environment the test cluster's jobs train with: a venv holding
# PyTorch 2.13.0 (CPU build) and NumPy, world-readable, so every member's Unix account can run
# /opt/hpcgw-torch/bin/python (the `python` parameter of the `pytorch-cpu` template in the
# end-to-end tests, tests/e2e/).
#
# Usage (as root): scripts/torch-env.sh [DIR]   (default DIR: $HPCGW_TORCH_ENV or /opt/hpcgw-torch)
# Idempotent and quick when done: it checks the installed version without importing torch.
#
# The venv needs a CPython 3.11 that every account can run: pip takes torch 2.13.0 from this
# machine's local wheel (cp311; PIP_FIND_LINKS / pip.conf find-links, allowed by the constraints
# in /etc/xdg/pip) only on 3.11 - on another Python it fetches a CUDA build of several GB.
#  - Debian 12: the system's /usr/bin/python3 is 3.11; the venv is made from it.
#  - Debian 13 (python3 3.13): the machine's own CPython 3.11 (pyenv's, under /root, which the
#    members' accounts cannot reach) is copied, without its site-packages, to BASE (default: the
#    directory hpcgw-python3.11 next to DIR), its interpreter's RUNPATH made relative
#    (patchelf, installed if missing), and the venv is made from that copy. A Debian 13 with no
#    CPython 3.11 at all: the venv is made from the system's Python, and pip takes torch from
#    the package index (a CUDA build: ~5 GB on disk, about a minute here).
# Environment: HPCGW_TORCH_SYSTEM_PYTHON (default /usr/bin/python3: the system's Python, tried
#   first), HPCGW_TORCH_BASE_PYTHON (BASE, where the copy goes).
# Everything is checked as the unprivileged user `nobody`, as the members' jobs would run it.
set -euo pipefail

DIR=${1:-${HPCGW_TORCH_ENV:-/opt/hpcgw-torch}}
SYSTEM_PYTHON=${HPCGW_TORCH_SYSTEM_PYTHON:-/usr/bin/python3}
BASE=${HPCGW_TORCH_BASE_PYTHON:-$(dirname "$DIR")/hpcgw-python3.11}
TORCH=2.13.0
PYVER=3.11 # the local torch wheel's Python
export PIP_DISABLE_PIP_VERSION_CHECK=1

die() { echo "torch-env.sh: $*" >&2; exit 1; }
# as_nobody CMD...: run CMD as an account with no access to /root (from /, which it can read)
as_nobody() { (cd / && runuser -u nobody -- "$@"); }
# pyver CMD...: MAJOR.MINOR of the Python that CMD runs (empty if it does not run)
pyver() { "$@" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true; }

installed() {
  [[ -x $DIR/bin/python ]] && as_nobody "$DIR/bin/python" - "$TORCH" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
torch = version("torch")
version("numpy")
sys.exit(0 if torch.split("+")[0] == sys.argv[1] else 1)
EOF
}

# python_home: sys.base_prefix of a CPython $PYVER on this machine (PATH first, then pyenv's)
python_home() {
  local c
  for c in "python$PYVER" python3 "${PYENV_ROOT:-/root/.pyenv}"/versions/"$PYVER".*/bin/"python$PYVER"; do
    command -v "$c" >/dev/null || continue
    [[ $(pyver "$c") == "$PYVER" ]] || continue
    "$c" -c 'import sys; print(sys.base_prefix)'
    return 0
  done
  return 1
}

# copy_python HOME: copy the installation at HOME to $BASE, runnable by every account
copy_python() {
  local home=$1 tmp=$BASE.tmp.$$ rpath
  echo "copying the CPython $PYVER at $home to $BASE (members cannot run it where it is)" >&2
  if ! command -v patchelf >/dev/null; then
    { apt-get install -y -q --no-install-recommends patchelf \
        || { apt-get update -q && apt-get install -y -q --no-install-recommends patchelf; }; } \
      >/tmp/hpcgw-torch-apt.log 2>&1 || die "apt-get install patchelf failed: /tmp/hpcgw-torch-apt.log"
  fi
  rm -rf "$tmp"
  mkdir -p "$tmp"
  # its site-packages (pyenv's holds hundreds of MB of unrelated tools) is not the venv's
  tar -C "$home" --exclude="./lib/python$PYVER/site-packages" -cf - . | tar -C "$tmp" -xf -
  mkdir -p "$tmp/lib/python$PYVER/site-packages"
  # a shared build finds libpython through an absolute RUNPATH into $home, unreadable to members
  rpath=$(patchelf --print-rpath "$tmp/bin/python$PYVER")
  # shellcheck disable=SC2016 # $ORIGIN is the dynamic loader's, not the shell's
  if [[ -n $rpath ]]; then patchelf --set-rpath '$ORIGIN/../lib' "$tmp/bin/python$PYVER"; fi
  chmod -R a+rX "$tmp"
  rm -rf "$BASE"
  mv "$tmp" "$BASE"
}

# base_python: path of a CPython $PYVER that every account can run, to make the venv from (the
# system's Python when there is no $PYVER)
base_python() {
  local home
  if [[ $(pyver "$SYSTEM_PYTHON") == "$PYVER" ]]; then echo "$SYSTEM_PYTHON"; return; fi
  if [[ $(pyver as_nobody "$BASE/bin/python$PYVER") != "$PYVER" ]]; then
    if ! home=$(python_home); then
      echo "torch-env.sh: no Python $PYVER (python$PYVER or python3 on PATH," \
        "${PYENV_ROOT:-/root/.pyenv}/versions/$PYVER.*): the venv uses $SYSTEM_PYTHON" \
        "($(pyver "$SYSTEM_PYTHON")), and pip fetches torch $TORCH from the index" >&2
      echo "$SYSTEM_PYTHON"
      return
    fi
    # one that members can run already (e.g. under /usr/local) needs no copy
    if [[ $(pyver as_nobody "$home/bin/python$PYVER") == "$PYVER" ]]; then
      echo "$home/bin/python$PYVER"
      return
    fi
    copy_python "$home"
    [[ $(pyver as_nobody "$BASE/bin/python$PYVER") == "$PYVER" ]] \
      || die "the copy $BASE/bin/python$PYVER does not run as an unprivileged user"
  fi
  echo "$BASE/bin/python$PYVER"
}

if installed; then
  echo "present: $DIR (torch $TORCH)"
  exit 0
fi
[[ $(id -u) -eq 0 ]] || die "run as root (it may install patchelf and write under $(dirname "$DIR"))"
umask 022 # the venv must be readable and runnable by every member's account
PYTHON=$(base_python)
if [[ $(pyver as_nobody "$DIR/bin/python") != "$(pyver "$PYTHON")" ]]; then
  # a venv of another Python, or one that members cannot run: make it again
  [[ ! -e $DIR || -f $DIR/pyvenv.cfg ]] || die "$DIR exists and is not a venv"
  "$PYTHON" -m venv --clear "$DIR"
fi
"$DIR/bin/pip" install -q --no-input "torch==$TORCH" numpy
chmod -R a+rX "$DIR"
installed || die "torch $TORCH is not installed in $DIR for an unprivileged user"
as_nobody "$DIR/bin/python" -c 'import torch; print("installed:", torch.__file__, torch.__version__)' \
  || die "import torch fails in $DIR as an unprivileged user"
