#!/usr/bin/env bash
# Build a folder of wheels -- openbook itself and every dependency -- for an offline install:
#
#     pip install --no-index --find-links WHEELS "openbook[demo]"
#
# Usage: scripts/build_wheelhouse.sh [OUT_DIR=wheels] [EXTRAS=demo,notebooks]
# Env:   PY (default .venv/bin/python: the wheels match ITS Python version and platform),
#        TORCH (default torch==2.13.0: the CPU build, as `make install` pins it).
#
# Wheels are specific to a Python minor version and platform (here: the one PY runs on);
# build with the same Python as the machine that will install them (Kaggle: check
# `python --version` in a notebook). At the end every requirement is resolved again from
# the folder alone (pip's global config and find-links ignored), so a missing wheel fails here,
# not on the offline machine.
set -euo pipefail
OUT=$(realpath -m "${1:-$(dirname "$0")/../wheels}")  # relative to where it is run from
cd "$(dirname "$0")/.."
EXTRAS=${2:-demo,notebooks}
PY=${PY:-.venv/bin/python}
TORCH=${TORCH:-torch==2.13.0}

mkdir -p "$OUT"
echo "building wheels for openbook[$EXTRAS] + $TORCH into $OUT (python: $("$PY" -c 'import sys; print(sys.version.split()[0])'))"
"$PY" -m pip wheel --quiet --wheel-dir "$OUT" "$TORCH" ".[$EXTRAS]"

echo "checking that $OUT alone resolves everything (no index, no other folder)"
env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
    "$PY" -m pip install --quiet --dry-run --ignore-installed --no-index --find-links "$OUT" \
    "$TORCH" "openbook[$EXTRAS]"

count=$(find "$OUT" -maxdepth 1 -name '*.whl' | wc -l)
size=$(du -sh "$OUT" | cut -f1)
echo "$OUT: $count wheels, $size. Install offline with:"
echo "  pip install --no-index --find-links $OUT \"openbook[$EXTRAS]\""
