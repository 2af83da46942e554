#!/usr/bin/env bash
# Prepare .gpu/ (git-ignored) for scripts/gpu_check.sh, on a CPU machine where pip reaches the package index:
# the pure-Python packages the GPU image lacks (its image has torch, Lightning, torchvision, torch-geometric,
# scipy, mpmath, pytest, rich; not Hydra) as wheels, and MNIST's compressed files (11 MB). The GPU machine then
# gets the working tree with .gpu/ carried beside it (the device tool: carry [".gpu"]).
#
#   HSVAE_DATA_DIR=../shared/data bash scripts/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
data="${HSVAE_DATA_DIR:?set HSVAE_DATA_DIR to the datasets folder (MNIST/raw/*.gz are copied from it)}"
mkdir -p .gpu/whl .gpu/data/MNIST/raw
rm -f .gpu/whl/*.whl
# Hydra and what it needs, pinned as the CPU environment has them; antlr4 4.9.3 exists only as a source archive:
# build its (pure-Python) wheel here
python3 -m pip download -q --no-deps --only-binary=:all: -d .gpu/whl \
    hydra-core==1.3.8 omegaconf==2.3.1 hydra-joblib-launcher==1.2.0
python3 -m pip wheel -q --no-deps -w .gpu/whl antlr4-python3-runtime==4.9.3
cp "$data"/MNIST/raw/*.gz .gpu/data/MNIST/raw/
du -sh .gpu
