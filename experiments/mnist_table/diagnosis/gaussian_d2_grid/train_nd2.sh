#!/usr/bin/env bash
# Diagnosis of Table 1's N-VAE d = 2 cell (#22 item 5): a shortened N-VAE d = 2 (40 epochs, 10-epoch warm-up) whose
# log-likelihood is then integrated on a grid beside the importance-sampled estimate.
cd /work/diag/src
export PATH=$(cat /work/venvwork/current)/bin:$PATH PYTHONPATH=/work/diag/src WANDB_MODE=offline WANDB_SILENT=true MPLBACKEND=Agg \
  HSVAE_DATA_DIR=/work/shared/data HSVAE_CACHE_DIR=/work/diag/.cache OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
python train.py latent=gaussian latent.dim=2 dataset=mnist seed=0 trainer.max_epochs=40 model.warmup_epochs=10 \
  evaluation=[ll] hydra.run.dir=/work/diag/runs/nd2_40ep
echo "exit $?"
