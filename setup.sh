#!/usr/bin/env bash
# Set up .venv for the lab on a fresh machine: ./setup.sh (the main job) or ./setup.sh --tests (also Chromium).
set -euo pipefail
cd "$(dirname "$0")"
# --tests: also install Debian's chromium, which the browser tests open the report in.
TESTS=0
case "${1:-}" in
  "") ;;
  --tests) TESTS=1 ;;
  *) echo "usage: ./setup.sh [--tests]" >&2; exit 2 ;;
esac
# Wait for the background Chromium install however this script ends, so nothing outlives it.
trap wait EXIT
# Chromium installs in the background while pip runs (the set-up's two slow parts overlap); a missing one skips tests.
if [ "$TESTS" = 1 ]; then
  { command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || echo "no chromium: the browser tests will skip"; } &
fi
# Reuse .venv when it exists: a second run only checks what is installed.
[ -x .venv/bin/python ] || python3 -m venv .venv
# torch first and pinned: this pin takes the CPU build, an unpinned torch would pull several GB of CUDA packages.
.venv/bin/pip install -q --no-compile torch==2.13.0
# The rest without bytecode: pip compiles on one core, compileall below on all of them.
.venv/bin/pip install -q --no-compile -r requirements.txt -e .
# The second quality judge without its declared torchaudio: torchaudio's wheels pin another torch, and the model
# needs only torch (lib.harness.metrics.DistillMos)
.venv/bin/pip install -q --no-compile --no-deps distillmos==0.9.1 xls-r-sqa==0.1.0
# Compile what the lab imports, leaving out what nothing here imports (tests, unused transformers models, ...).
.venv/bin/python -m compileall -q -j0 -x '/(tests?|sklearn|narwhals|prompt_toolkit|fontTools|jedi|markdown_it|wcwidth)/|/transformers/models/(?!(auto|vits|speecht5|whisper|fastspeech2_conformer|encoder_decoder|bloom)/)|/onnx/(backend|reference)/|/sympy/(physics|combinatorics|stats)/' .venv/lib >/dev/null || true
