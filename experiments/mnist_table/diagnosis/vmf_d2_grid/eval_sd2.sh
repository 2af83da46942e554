#!/usr/bin/env bash
# The grid check of Table 1's S-VAE d = 2 (S^2) campaign run, on a snapshot of its best checkpoint taken at 17:32 (best
# validation ELBO at epoch 225; the run was still training): the first 1000 test points beside IS-500 on the same
# points, at step 0.005 rad, then at half that step (the integral's convergence).
cd /work/main
export PATH=$(cat /work/venvwork/current)/bin:$PATH PYTHONPATH=/work/main WANDB_MODE=offline WANDB_SILENT=true MPLBACKEND=Agg \
  HSVAE_DATA_DIR=/work/shared/data HSVAE_CACHE_DIR=/work/diag/.cache OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for step in 0.005 0.0025; do
  nice -n 19 python eval.py ckpt_path=/work/diag/svae_d2_snap/checkpoints/best.ckpt "evaluation=[ll_grid]" \
    evaluation.ll_grid.step=$step evaluation.ll_grid.points=1000 hydra.run.dir=/work/diag/runs/sd2_eval_grid_$step
done
