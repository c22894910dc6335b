#!/usr/bin/env bash
# Training on Slurm that survives its time limit and preemption and restarts itself:
#   tools/slurm_batch.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
# submits a batch job with sbatch --requeue --signal=B:USR1@WARN_SECONDS (120): Slurm warns this script
# 120 s before the time limit, the script passes USR1 on to the training tasks, which finish their
# iteration, save a checkpoint and exit with status 75 (stopped by signal, resumable); the script then
# requeues the job (scontrol requeue), and the requeued job runs train.py again with --resume added
# (SLURM_RESTART_COUNT > 0), so it continues from that checkpoint. Nothing else of the command line changes.
# SIGTERM (scancel, preemption) stops training with a checkpoint too but requeues nothing: scancel means
# stop, and Slurm requeues a preempted job itself where the cluster's PreemptMode is REQUEUE (the job then
# resumes the same way).
# Settings, as tools/slurm_train.sh: GPUS (tasks, default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), GRES
# (gpu:GPUS_PER_NODE; set it empty on CPU partitions), PORT (29500, passed on as MASTER_PORT); and TIME
# (sbatch --time, e.g. 3-00:00:00), WARN_SECONDS (120), SBATCH_ARGS (more sbatch options). The job writes
# its output to WORK_DIR/slurm-JOBID.out, appending after a requeue.
set -euo pipefail

if [[ ${1:-} != --in-job ]]; then
    HERE=$(cd "$(dirname "$0")" && pwd)
    GPUS=${GPUS:-8}
    GPUS_PER_NODE=${GPUS_PER_NODE:-8}
    GRES=${GRES-gpu:$GPUS_PER_NODE}
    mkdir -p "$4"
    # sbatch runs a copy of this file from its spool directory: the tools' directory goes as an argument.
    # shellcheck disable=SC2086  # SBATCH_ARGS holds several options
    exec sbatch \
        --partition="$1" \
        --job-name="$2" \
        ${GRES:+--gres=$GRES} \
        --ntasks="$GPUS" \
        --ntasks-per-node="$GPUS_PER_NODE" \
        --cpus-per-task="${CPUS_PER_TASK:-5}" \
        ${TIME:+--time=$TIME} \
        --requeue \
        --signal="B:USR1@${WARN_SECONDS:-120}" \
        --open-mode=append \
        --output="$4/slurm-%j.out" \
        ${SBATCH_ARGS:-} \
        "$HERE/slurm_batch.sh" --in-job "$HERE" "$3" "$4" "${@:5}"
fi

# In the job: tools/slurm_batch.sh --in-job TOOLS_DIR CONFIG WORK_DIR [train.py args...]
HERE=$2
CONFIG=$3
WORK_DIR=$4
shift 4
ARGS=("$@")
if (( ${SLURM_RESTART_COUNT:-0} > 0 )); then
    ARGS+=(--resume)
    echo "slurm_batch.sh: restart ${SLURM_RESTART_COUNT} of job ${SLURM_JOB_ID}: train.py --resume (the latest checkpoint of $WORK_DIR)"
fi

PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" MASTER_PORT="${PORT:-29500}" \
srun --kill-on-bad-exit=1 \
    "${PYTHON:-python3}" -u "$HERE/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "${ARGS[@]}" &
pid=$!
warned=0
trap 'warned=1; kill -USR1 "$pid" 2>/dev/null || true' USR1
trap 'kill -TERM "$pid" 2>/dev/null || true' TERM
# A trapped signal ends `wait` early: wait again until srun is gone, then read its own status.
while kill -0 "$pid" 2>/dev/null; do
    wait "$pid" || true
done
status=0
wait "$pid" || status=$?
if (( warned && status == 75 )); then
    echo "slurm_batch.sh: training stopped on the time-limit warning and saved a checkpoint; requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
