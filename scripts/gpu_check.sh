#!/usr/bin/env bash
# The GPU runbook (issue 16): one command, at most 10 minutes on one H100/H200, everything it measures written
# under one folder. Run it first whenever a GPU is lent to this project, and commit what it produced.
#
#   bash scripts/gpu_check.sh OUT_DIR            # on the GPU machine, the working tree with .gpu/ (gpu_prepare.sh)
#   bash scripts/gpu_check.sh --smoke OUT_DIR    # the same steps at toy sizes on the CPU (tests/test_gpu_check.py)
#
# Steps (each with its own time limit, its output in OUT_DIR/<step>.txt):
#   1. environment: nvidia-smi, torch and CUDA versions;
#   2. the CUDA tests (samplers and Bessel functions on the GPU, under set_sync_debug_mode("error"));
#   3. scripts/bench_distributions.py --device cuda (each family vs the Gaussian, the sync-free check);
#   4. scripts/bench_stacked.py --device cuda (K = 1, 4, 10: the MLP VAE as one stack (hsvae.stack) vs K separate
#      runs in one process and as K processes);
#   5. S-VAE Table 1 at the paper's protocol (experiment=mnist_table: early stopping after the 100-epoch warm-up),
#      every cell's 10 seeds as one stack (seeds=[0..9]), the 10 cells side by side on the device (joblib), into
#      OUT_DIR/mnist_table, until the time left runs out. Run again into the same OUT_DIR (a second lease): the
#      cells already finished are skipped, the others continue from their last epoch (each stack's
#      checkpoints/stack_last.ckpt). Then make_tables writes OUT_DIR/table.md.
set -uo pipefail
smoke=0
if [ "${1:-}" = "--smoke" ]; then smoke=1; shift; fi
out="${1:?usage: bash scripts/gpu_check.sh [--smoke] OUT_DIR}"
cd "$(dirname "$0")/.."
mkdir -p "$out"
out="$(cd "$out" && pwd)"
start=$(date +%s)
budget=${GPU_CHECK_SECONDS:-570}  # under the lease's 10-minute command limit
export PYTHONUNBUFFERED=1 WANDB_MODE=offline MPLBACKEND=Agg
if ls .gpu/whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/hsvae-site \
        .gpu/whl/*.whl && export PYTHONPATH="/tmp/hsvae-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
if [ -z "${HSVAE_DATA_DIR:-}" ] && [ -d .gpu/data ]; then export HSVAE_DATA_DIR="$PWD/.gpu/data"; fi
if [ -n "${HSVAE_DATA_DIR:-}" ] && [ ! -f "$HSVAE_DATA_DIR/MNIST/raw/train-images-idx3-ubyte" ]; then
    # only the compressed files travel: unpack them beside the run
    mkdir -p /tmp/hsvae-data/MNIST/raw
    for f in "$HSVAE_DATA_DIR"/MNIST/raw/*.gz; do gunzip -c "$f" > "/tmp/hsvae-data/MNIST/raw/$(basename "$f" .gz)"; done
    export HSVAE_DATA_DIR=/tmp/hsvae-data
fi
left() { echo $(( budget - ($(date +%s) - start) )); }
step() {  # step NAME SECONDS COMMAND...: run with a time limit, output to OUT_DIR/NAME.txt, one status line
    local name=$1 limit=$2; shift 2
    local t0=$(date +%s)
    timeout --signal=INT --kill-after=20 "$limit" "$@" > "$out/$name.txt" 2>&1
    local rc=$?
    echo "$name: exit $rc after $(( $(date +%s) - t0 )) s" | tee -a "$out/steps.txt"
}

if [ $smoke = 1 ]; then
    device=cpu
    step environment 60 python3 -c "import torch, platform; print(torch.__version__, platform.processor())"
    step cuda_tests 120 python3 -m pytest -q -p no:cacheprovider -n 0 -m "" tests/distributions/test_no_host_sync.py -k spherical_cauchy
    step bench_distributions 120 python3 scripts/bench_distributions.py --device cpu --dims 3 --rounds 1 --inner 1 --warmup 1 --no-compile
    step bench_stacked 120 python3 scripts/bench_stacked.py --device cpu --stacks 1 2 --rounds 1 --steps 1
    table=(latent.dim=2 'seeds=[0,1]' trainer.max_epochs=1 +trainer.limit_train_batches=2 +trainer.limit_val_batches=2
           +trainer.limit_test_batches=1 evaluation.ll.samples=2 hydra.launcher.n_jobs=2)
else
    device=cuda
    step environment 60 bash -c "nvidia-smi; python3 -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'"
    step cuda_tests 120 python3 -m pytest -q -p no:cacheprovider -n 0 -m "" tests/distributions/test_von_mises_fisher.py tests/special/test_bessel.py tests/test_stack.py -k cuda
    step bench_distributions 120 python3 scripts/bench_distributions.py --device cuda --rounds 10 --inner 5 --no-compile
    step bench_stacked 150 python3 scripts/bench_stacked.py --device cuda --threads 0
    table=('seeds=[0,1,2,3,4,5,6,7,8,9]' trainer=gpu hydra.launcher.n_jobs=10)
fi
# the table: whatever time is left, less a minute for make_tables
step mnist_table "$(( $(left) - 60 > 30 ? $(left) - 60 : 30 ))" python3 train.py -m experiment=mnist_table \
    '~hydra.sweeper.params.seed' launcher=joblib callbacks.progress_bar=null allow_overwrite=true \
    hydra.sweep.dir="$out/mnist_table" "${table[@]}"
step make_tables 60 python3 scripts/make_tables.py "$out/mnist_table" --metrics test/log_likelihood test/elbo \
    --paper experiments/mnist_table/paper.yaml --out "$out/table.md" --wall-time
echo "device=$device total $(( $(date +%s) - start )) s; outputs in $out" | tee -a "$out/steps.txt"
