#!/usr/bin/env bash
# Run every numbered notebook of a profile with papermill, keep going past failures, then render the report:
#   ./run_all.sh [PROFILE [NN ...]]   PROFILE defaults to 'default'; parameters come from params/PROFILE/*.yaml;
#                                     NN picks notebooks by number (e.g. 02 90); the others' results are kept
# The run is `tts-lab run` (lib/pipeline/profile_run.py; --from NN resumes, --skip NN leaves one out): executed
# notebooks go to outputs/PROFILE/notebooks/, the report to outputs/PROFILE/report.html. TTS_LAB_PARAMS and
# TTS_LAB_OUTPUTS move the params and outputs folders (the tests use them); TTS_LAB_REQUIRE_QUIET=SECONDS makes every
# timing wait that long for a quiet machine and fail rather than record a contended number.
set -euo pipefail
cd "$(dirname "$0")"
PROFILE="${1:-default}"
[ $# -eq 0 ] || shift
export TTS_LAB_COMMAND="./run_all.sh $PROFILE${*:+ $*}"  # each notebook's metrics.json keeps the command it ran under
exec tts-lab run "$PROFILE" "$@"
