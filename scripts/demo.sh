#!/usr/bin/env bash
# Install bindindex into .venv and run the demo: index a sample folder, find
# images that match a sound, cluster everything. Arguments go to `bindindex demo`,
# e.g. `bash scripts/demo.sh --media ~/my-media --model imagebind-test`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip --disable-pip-version-check install -q -e .
exec .venv/bin/bindindex demo "$@"
