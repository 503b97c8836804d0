#!/usr/bin/env bash
# torch-env.sh - the Python environment the test cluster's jobs train with: a venv holding
# PyTorch 2.13.0 (CPU build) and NumPy, world-readable, so every member's Unix account can run
# /opt/hpcgw-torch/bin/python (the `python` parameter of the `pytorch-cpu` template in the
# end-to-end tests, tests/e2e/).
#
# Usage (as root): scripts/torch-env.sh [DIR]   (default DIR: $HPCGW_TORCH_ENV or /opt/hpcgw-torch)
# Idempotent and quick when done: it checks the installed version without importing torch.
# The venv is built from the system's /usr/bin/python3 (Debian's), not a Python under /root,
# which the members' accounts cannot reach. pip takes torch 2.13.0 from this machine's local
# wheel (PIP_FIND_LINKS / pip.conf find-links); the constraints in /etc/xdg/pip allow it.
set -euo pipefail

DIR=${1:-${HPCGW_TORCH_ENV:-/opt/hpcgw-torch}}
TORCH=2.13.0
PYTHON=/usr/bin/python3
export PIP_DISABLE_PIP_VERSION_CHECK=1

installed() {
  [[ -x $DIR/bin/python ]] && "$DIR/bin/python" - "$TORCH" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
torch = version("torch")
version("numpy")
sys.exit(0 if torch.split("+")[0] == sys.argv[1] else 1)
EOF
}

if installed; then
  echo "present: $DIR (torch $TORCH)"
  exit 0
fi
umask 022 # the venv must be readable and runnable by every member's account
[[ -x $DIR/bin/python ]] || "$PYTHON" -m venv "$DIR"
"$DIR/bin/pip" install -q --no-input "torch==$TORCH" numpy
chmod -R a+rX "$DIR"
installed || { echo "torch-env.sh: torch $TORCH is not importable from $DIR" >&2; exit 1; }
"$DIR/bin/python" -c 'import torch; print("installed:", torch.__file__, torch.__version__)'
