#!/usr/bin/env bash
# The grid check of Table 1's S-VAE d = 2 (S^2) campaign cell on its final best checkpoint (best validation ELBO at
# epoch 356, early-stopped at 406; copied from /work/camp): all 10 000 test points, the integral over S^2 beside
# IS-500 on the same points (step 0.005 rad: converged to 2e-5 at half the step on the epoch-225 snapshot).
cd /work/main
export PATH=$(cat /work/venvwork/current)/bin:$PATH PYTHONPATH=/work/main WANDB_MODE=offline WANDB_SILENT=true MPLBACKEND=Agg \
  HSVAE_DATA_DIR=/work/shared/data HSVAE_CACHE_DIR=/work/diag/.cache OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
nice -n 19 python eval.py ckpt_path=/work/diag/svae_d2_final/checkpoints/best.ckpt "evaluation=[ll_grid]" \
  evaluation.ll_grid.step=0.005 evaluation.ll_grid.points=null hydra.run.dir=/work/diag/runs/sd2_final_eval_grid
