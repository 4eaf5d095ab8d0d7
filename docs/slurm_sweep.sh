#!/bin/bash
# Run the study's grid as a Slurm job array: one shard of the grid per task.
#
#   sbatch docs/slurm_sweep.sh
#
# Every task writes finished runs to the same results directory (it must be
# on a file system that all nodes share), so resubmitting the array after a
# failure or a time limit runs only what is missing. Change the preset, the
# paths and the resources to fit your cluster; 3,888 runs split into 64
# shards is about 61 runs per task.
#SBATCH --job-name=ncjax-sweep
#SBATCH --array=0-63
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --output=logs/sweep-%A_%a.out

set -euo pipefail
RESULTS=${RESULTS:-$HOME/ncjax-results/study}
DATA_DIR=${DATA_DIR:-$HOME/data}

python -m experiments.sweep \
  --preset=study \
  --data_dir="$DATA_DIR" \
  --results="$RESULTS" \
  --num_shards="$SLURM_ARRAY_TASK_COUNT" \
  --shard_index="$SLURM_ARRAY_TASK_ID"
