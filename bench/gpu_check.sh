#!/usr/bin/env bash
# The GPU check: what a CUDA machine must show, in one command of under 8 minutes.
#
#   bash bench/gpu_check.sh --prepare   # here, with the package registry: wheels into .whl/
#   bash bench/gpu_check.sh             # on the CUDA machine, from the repository root
#
# The CUDA machine has PyTorch but no network: the project's other dependencies
# travel as wheels in .whl/ (ignored by git; made by --prepare). The check installs
# the project without touching that machine's torch, then
#   1. pytest -m gpu                      (the CUDA-only tests)
#   2. the engine and service tests on CUDA (the default suite; `auto` = CUDA there)
#   3. bench/engine_bench.py on CUDA in bf16 and in fp32: step cost against a bare
#      VGG19, the default preset at 512² and 1024², the high preset, peak GPU memory,
#      and the race against the seed preset;
#   4. bench/fullres_bench.py on CUDA: a tiled 12 MP evaluation against a bare VGG19,
#      the 12 MP and 24 MP full-resolution jobs (24 MP target: 60 s).
# Everything it prints also goes to $OUT/gpu_check.log when $OUT is set.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1
        protobuf==7.35.1 grpclib==0.4.9 h2==4.3.0 hpack==4.1.0 hyperframe==6.1.0 multidict==6.7.0)

if [ "${1:-}" = "--prepare" ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    rm -rf .whl && mkdir -p .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
    python3 -m pip download -q --no-deps --only-binary=:all: -d .whl pytest-timeout >/dev/null 2>&1 || true
    ls .whl
    exit 0
fi

log=${OUT:-/tmp}/gpu_check.log
exec > >(tee "$log") 2>&1
export PYTHONUNBUFFERED=1
t0=$(date +%s)
section() { echo; echo "== $1 ($(( $(date +%s) - t0 )) s)"; }

section "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

section "install (the machine's torch stays)"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD/proto:$PWD
else
    export PYTHONPATH=$PWD/proto:$PWD
fi
# The import names the installed package would have, without pip touching torch.
mkdir -p /tmp/names
ln -sfn "$PWD/server" /tmp/names/styleserver
ln -sfn "$PWD/plugin" /tmp/names/stylegimp
export PYTHONPATH=/tmp/names:$PYTHONPATH
python3 -c "import stylecore, styleserver, styletransfer.v1.style_transfer_pb2, torch; assert torch.cuda.is_available()" || exit 1

section "1. pytest -m gpu"
python3 -m pytest -q -m gpu -p no:cacheprovider tests || echo "GPU TESTS FAILED"

section "2. the engine and service tests on CUDA"
python3 -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_losses.py tests/test_lbfgs.py \
    tests/test_tiling.py tests/test_grpc.py || echo "TESTS ON CUDA FAILED"

for precision in bf16 fp32; do
    section "3. engine benchmark on CUDA, $precision"
    timeout 150 python3 bench/engine_bench.py --precision "$precision" --sizes 512,1024 --high \
        || echo "BENCHMARK ($precision) FAILED OR TIMED OUT"
done
section "4. full resolution on CUDA: cost of a tiled 12 MP evaluation, then 12 MP and 24 MP jobs (target 24 MP <= 60 s)"
timeout 120 python3 bench/fullres_bench.py --only cost || echo "FULL-RESOLUTION COST FAILED OR TIMED OUT"
timeout 150 python3 bench/fullres_bench.py --only memory || echo "FULL-RESOLUTION JOBS FAILED OR TIMED OUT"
timeout 120 python3 bench/fullres_bench.py --only gpu || echo "24 MP FULL-PRESET JOB FAILED OR TIMED OUT"
section "done"
