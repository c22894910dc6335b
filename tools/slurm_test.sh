#!/usr/bin/env bash
# Testing on a Slurm cluster: tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
# The job and its variables (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS, PORT, GRES, PYTHON) are
# tools/slurm_train.sh's.
exec bash "$(dirname "$0")/slurm_train.sh" --test "$@"
