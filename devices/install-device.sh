#!/usr/bin/env bash
# Install the device runtime (edge-runtime + extras) into a virtualenv, and check it imports.
# The one device install: Dockerfile.arm64 runs it, the arm64 chroot test runs it, a board can too.
#
#   devices/install-device.sh [--python PY] [--venv DIR] [--extras LIST] [--pip-arg ARG]... [SOURCE]
#
#   SOURCE    the project's wheel (dist/edge_runtime-*.whl) or source directory (default: this checkout)
#   --python  interpreter that makes the venv (default: python3)
#   --venv    where the venv goes (default: /opt/edge-runtime)
#   --extras  comma-separated extras (default: tflite,zstd,signing; add camera for OpenCV sources;
#             "" for the base install alone)
#   --pip-arg extra argument for `pip install` (repeatable; e.g. --no-cache-dir)
#
# The package index and mirror come from the machine's pip configuration; none is written here.
# Examples:
#   sudo devices/install-device.sh dist/edge_runtime-0.1.0-py3-none-any.whl
#   devices/install-device.sh --python python3.10 --venv ~/edge-venv --extras tflite,zstd,signing,camera .
set -euo pipefail

python=python3
venv=/opt/edge-runtime
extras=tflite,zstd,signing
pip_args=()
source_path="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --python) python="$2"; shift 2 ;;
        --venv) venv="$2"; shift 2 ;;
        --extras) extras="$2"; shift 2 ;;
        --pip-arg) pip_args+=("$2"); shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "install-device.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) source_path="$1"; shift ;;
    esac
done

if [ -d "$source_path" ]; then
    [ -f "$source_path/pyproject.toml" ] || { echo "install-device.sh: no pyproject.toml in $source_path" >&2; exit 2; }
    source_path="$(cd "$source_path" && pwd)"
elif [ ! -f "$source_path" ] || [ "${source_path%.whl}" = "$source_path" ]; then
    echo "install-device.sh: $source_path is neither a wheel nor a source directory" >&2
    exit 2
fi
command -v "$python" >/dev/null 2>&1 || { echo "install-device.sh: no interpreter $python" >&2; exit 2; }

requirement="$source_path"
if [ -n "$extras" ]; then
    requirement="$source_path[$extras]"
fi

echo "install-device.sh: $("$python" --version 2>&1) -> $venv: $requirement"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install ${pip_args[@]+"${pip_args[@]}"} "$requirement"

# Check it imports and the entry point runs (a broken wheel fails here, not on the board).
"$venv/bin/edge-runtime" --help >/dev/null
"$venv/bin/python" - <<'EOF'
from importlib.metadata import PackageNotFoundError, version

import edge_runtime

found = []
for name in ("edge-runtime", "onnxruntime", "numpy", "ai-edge-litert", "zstandard", "cryptography",
             "opencv-python-headless"):
    try:
        found.append(f"{name} {version(name)}")
    except PackageNotFoundError:
        pass
print("install-device.sh: installed " + ", ".join(found))
EOF
