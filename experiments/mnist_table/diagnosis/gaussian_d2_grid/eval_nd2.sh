#!/usr/bin/env bash
# The grid check of the N-VAE d = 2 checkpoint: the whole test set at step 0.02 beside the 500-sample estimate, then
# the first 2000 test points at step 0.01 with 5000 importance samples.
cd /work/diag/src
export PATH=$(cat /work/venvwork/current)/bin:$PATH PYTHONPATH=/work/diag/src WANDB_MODE=offline WANDB_SILENT=true MPLBACKEND=Agg \
  HSVAE_DATA_DIR=/work/shared/data HSVAE_CACHE_DIR=/work/diag/.cache OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
CK=/work/diag/runs/nd2_40ep/checkpoints/best.ckpt
python eval.py ckpt_path=$CK "evaluation=[ll,ll_grid]" evaluation.ll_grid.points=null hydra.run.dir=/work/diag/runs/nd2_eval_full
python eval.py ckpt_path=$CK "evaluation=[ll_grid]" evaluation.ll_grid.points=2000 evaluation.ll_grid.step=0.01 \
  evaluation.ll_grid.samples=5000 hydra.run.dir=/work/diag/runs/nd2_eval_fine
echo "exit $?"
