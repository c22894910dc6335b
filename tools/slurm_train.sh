#!/usr/bin/env bash
# Training on a Slurm cluster: tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
# GPUS (total tasks, default 8), GPUS_PER_NODE (default 8), CPUS_PER_TASK (default 5) and
# SRUN_ARGS (extra srun options). PORT (default 29500) is passed on as MASTER_PORT, the port
# rank 0 listens on: give jobs that share a node different PORTs. GRES (default
# gpu:GPUS_PER_NODE) may be set empty for CPU partitions, where the tasks run with gloo.
# tools/slurm_test.sh starts test.py the same way, through: slurm_train.sh --test PARTITION JOB_NAME CONFIG
# CHECKPOINT [...].
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
if [[ ${1:-} == --test ]]; then
    shift
    TOOL=("$HERE/test.py" "$3" "$4")  # CONFIG CHECKPOINT
else
    TOOL=("$HERE/train.py" "$3" "--work-dir=$4")  # CONFIG WORK_DIR
fi
PARTITION=$1
JOB_NAME=$2
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-}
PORT=${PORT:-29500}
GRES=${GRES-gpu:$GPUS_PER_NODE}

# shellcheck disable=SC2086  # SRUN_ARGS holds several options
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" MASTER_PORT="$PORT" \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    ${GRES:+--gres=$GRES} \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "${PYTHON:-python3}" -u "${TOOL[@]}" --launcher=slurm "${@:5}"
