#!/bin/bash
# Summarize a corpus on a Slurm cluster: 8 tasks, one GPU each, over a shared file system.
# Each task takes the inputs whose path hash falls in its shard; outputs are written atomically and
# cached, so a failed task can simply be resubmitted (sbatch --array=3 slurm-array.sh).
#SBATCH --job-name=abridge
#SBATCH --array=0-7
#SBATCH --gpus=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output=abridge-%A_%a.log
set -euo pipefail
# Every task writes its own OUT_DIR (the lock is per OUT_DIR); they can be merged afterwards, or give
# each task the same OUT_DIR with --wait-lock to serialize writes (slower).
exec abridge summarize /shared/corpus --recursive \
  -o "/shared/summaries/shard-${SLURM_ARRAY_TASK_ID}" \
  --model /shared/models/Qwen3-4B-Instruct-2507 \
  --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}" \
  --report "/shared/summaries/report-${SLURM_ARRAY_TASK_ID}.json" \
  --quiet
