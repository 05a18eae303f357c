#!/usr/bin/env bash
# Issue 15 on a lent GPU machine, in one call: the GPU report (bench/train.py --gpu-report), then
# the fast-path and multi-job tests on CUDA. Each stage has its own time limit, so a hang in one
# keeps the other's output; everything is also written under $OUT (or ./gpu-out).
#
# The machine's python3 has PyTorch, ONNX Runtime and pytest but not pydantic: carry its wheels
# in .whl/ and MNIST, gzipped (unpacked there), in .gpudata/MNIST/raw/, e.g.
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl pydantic==2.14.4 \
#     pydantic-core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4 \
#     annotated-types==0.8.0 typing-inspection==0.4.5
#   mkdir -p .gpudata/MNIST/raw && for f in ../shared/data/MNIST/raw/*; do
#     gzip -c "$f" > .gpudata/MNIST/raw/$(basename "$f").gz; done
# and run `bash bench/gpu_report.sh` there with .whl and .gpudata carried.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1 BENTOML_DO_NOT_TRACK=true
if [ -z "${GANFORGE_DATA_DIR:-}" ]; then  # torchvision (the naive loop) reads plain IDX files only
  mkdir -p /tmp/gpudata && cp -r .gpudata/MNIST /tmp/gpudata/ && gunzip -f /tmp/gpudata/MNIST/raw/*.gz
  export GANFORGE_DATA_DIR=/tmp/gpudata
fi
export BENTOML_HOME=/tmp/bentoml-home
export GANFORGE_RUNS_DIR=/tmp/runs GANFORGE_VAR_DIR=/tmp/var
REPORT_S=${REPORT_S:-330} TESTS_S=${TESTS_S:-150}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "$OUT/machine.txt"
timeout "$REPORT_S" python3 bench/train.py --gpu-report "$@" 2>&1 | tee "$OUT/gpu_report.md"
echo "gpu report exit: ${PIPESTATUS[0]}" | tee -a "$OUT/gpu_report.md"
timeout "$TESTS_S" python3 -m pytest -q -p no:cacheprovider -k cuda \
  tests/trainer/test_fastpath.py tests/trainer/test_multi.py 2>&1 | tee "$OUT/gpu_tests.txt"
echo "gpu tests exit: ${PIPESTATUS[0]}" | tee -a "$OUT/gpu_tests.txt"
