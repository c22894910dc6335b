#!/usr/bin/env bash
# Distributed testing with torchrun: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
# The launch and its variables (NNODES, NODE_RANK, MASTER_ADDR, PORT, PYTHON) are tools/dist_train.sh's.
exec bash "$(dirname "$0")/dist_train.sh" --test "$@"
