#!/bin/bash
# One lent-GPU call (issue 52's last rows): notebook 05's GPU suite again with the current code (durations in fp32
# under autocast), from the teacher bundle's float16 weights; results under $OUT/h100/05_hardware_benchmark.
set -u
OUT=${OUT:-$TMPDIR/slot-out}; mkdir -p $OUT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $TMPDIR/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/.devrun/site:$TMPDIR/site:$PWD TTS_LAB_TEACHER_BUNDLE=$PWD/.devrun/bundle PYTHONUNBUFFERED=1
export TTS_LAB_OUTPUTS=$OUT
L=$OUT
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print('torch', torch.__version__)"
  python3 -c "import bitsandbytes as b; print('bitsandbytes', b.__version__)" 2>&1 | tail -1; } > $L/gpu.txt 2>&1
timeout -s TERM 500 python3 -m lib.jobs.device_run --queries .devrun/queries.json --profile h100 --bnb --budget-s 400 \
  > $L/device_log.txt 2>&1
rc=$?; cat $L/gpu.txt >> $L/device_log.txt; rm $L/gpu.txt
tail -n 40 $L/device_log.txt; ls -laR $OUT; exit $rc
