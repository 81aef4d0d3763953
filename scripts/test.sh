#!/usr/bin/env bash
# Install bindindex with its test dependencies into .venv and run the tests.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }

# The parity tests use torchaudio 2.9.1 as the reference for resampling and
# filterbanks, and it pins torch 2.9.1 exactly. torch and torchvision go first,
# so that pip does not pick a newer torch that torchaudio cannot follow.
pip install -q "torch==2.9.1" "torchvision==0.24.1"
pip install -q "torch==2.9.1" "torchaudio==2.9.1"
pip install -q -e ".[test]" "torch==2.9.1" "torchvision==0.24.1" "torchaudio==2.9.1"
# Meta's reference implementation, for the parity tests only. Its declared
# dependencies (pytorchvideo, decord, ...) do not install with current torch.
pip install -q --no-deps "imagebind-unofficial==0.1.1"

# The browser test drives Debian's Chromium through Playwright; Playwright's own
# browser downloads are not used. Without root it cannot be installed here, and
# the browser test is skipped.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
    else
        echo "note: /usr/bin/chromium is missing; the browser test will be skipped" \
            "(install it with: sudo apt-get install chromium)" >&2
    fi
fi

exec .venv/bin/python -m pytest "$@"
