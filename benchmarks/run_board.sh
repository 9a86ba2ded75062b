#!/usr/bin/env bash
# Measure a board the way benchmarks/results/ was measured on x86_64, and write the files to commit.
#
# Usage (on the board, in a checkout with the device install plus the `bench` extra):
#   benchmarks/run_board.sh BOARD BUNDLE [TFLITE_BUNDLE] [SECONDS]
#   benchmarks/run_board.sh raspberry-pi-5 build/demo_bundle build/demo_tflite 30
#
# BOARD names the files (lowercase, dashes: raspberry-pi-5, jetson-orin-nano); BUNDLE is an exported
# bundle (copy it from the workstation: the board needs no exporter); TFLITE_BUNDLE, when given, adds
# the LiteRT cases. Writes under benchmarks/results/BOARD/:
#   device.json            edge-runtime device --json (board, evidence, profile)
#   latency.<backend>.*    edge-runtime bench per backend: JSON, CSV, markdown, PNG charts
#   memory.json            peak RSS of the daemon per backend and precision
#   overhead.json          the daemon's steady state vs Engine.infer vs the raw graphs
# then say where; add a row to benchmarks/results/README.md by hand.
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
board="$1"
bundle="$2"
tflite_bundle="${3:-}"
seconds="${4:-30}"
case "$board" in
    *[!a-z0-9-]* | "") echo "BOARD must be lowercase letters, digits and dashes, got '$board'" >&2; exit 2 ;;
esac
[ -f "$bundle/manifest.json" ] || { echo "$bundle: not a bundle (no manifest.json)" >&2; exit 2; }
if [ -n "$tflite_bundle" ] && [ ! -f "$tflite_bundle/manifest.json" ]; then
    echo "$tflite_bundle: not a bundle (no manifest.json)" >&2
    exit 2
fi

here="$(cd "$(dirname "$0")" && pwd)"
out="$here/results/$board"
mkdir -p "$out"
python="${PYTHON:-python3}"

echo "[1/5] device" >&2
edge-runtime device --json > "$out/device.json"
echo "[2/5] latency, onnxruntime (${seconds} s)" >&2
edge-runtime bench "$bundle" --backend onnxruntime --seconds "$seconds" --out "$out" --name latency.onnxruntime
if [ -n "$tflite_bundle" ]; then
    echo "[3/5] latency, tflite (${seconds} s)" >&2
    edge-runtime bench "$tflite_bundle" --backend tflite --seconds "$seconds" --out "$out" --name latency.tflite
    cases="onnxruntime:fp32,onnxruntime:int8,tflite:fp32,tflite:int8"
else
    echo "[3/5] latency, tflite: skipped (no TFLITE_BUNDLE)" >&2
    cases="onnxruntime:fp32,onnxruntime:int8"
fi
echo "[4/5] memory" >&2
memory_args=("$bundle" --frames 200 --cases "$cases" --json "$out/memory.json")
[ -n "$tflite_bundle" ] && memory_args+=(--tflite-bundle "$tflite_bundle")
"$python" "$here/memory.py" "${memory_args[@]}"
echo "[5/5] daemon overhead" >&2
"$python" "$here/daemon_overhead.py" --models none --bundle "bundle=$bundle" --frames 300 --rounds 3 --json "$out/overhead.json"
echo "wrote $out; add a row to benchmarks/results/README.md and commit the folder" >&2
