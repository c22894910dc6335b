#!/usr/bin/env bash
# Distributed training with torchrun: tools/dist_train.sh CONFIG GPUS [train.py args...]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR and PORT (default 29500). Without CUDA the
# GPUS processes run on the CPU with the gloo backend. PYTHON picks the interpreter.
# tools/dist_test.sh starts test.py the same way, through: dist_train.sh --test CONFIG CHECKPOINT GPUS [...].
# SIGTERM, SIGINT or SIGUSR1 to torchrun reaches every worker: training saves a checkpoint and stops
# (docs/reliability.md); torchrun gives the workers TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds (30) for it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
if [[ ${1:-} == --test ]]; then
    TOOL=("$HERE/test.py" "$2" "$3")  # CONFIG CHECKPOINT
    shift 3
else
    TOOL=("$HERE/train.py" "$1")  # CONFIG
    shift
fi
GPUS=$1
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}

PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
"${PYTHON:-python3}" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$GPUS" \
    --signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 \
    "${TOOL[@]}" --launcher pytorch "${@:2}"
