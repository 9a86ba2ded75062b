"""Peak RSS of the daemon, per backend and precision: what a board must have free to run a bundle.

Each case is a whole ``edge-runtime run`` process (``--source synthetic``, ``--max-frames N``,
JSON lines to /dev/null), so the number is what the operating system charged to the daemon:
Python, numpy, the runtime's libraries, every session and the frame buffers. It is read from the
child's ``ru_maxrss`` (``os.wait4``), not sampled. A baseline process that only imports
``edge_runtime`` is measured too, so the model's share can be read off.

Usage::

    python benchmarks/memory.py BUNDLE [--tflite-bundle TFLITE_BUNDLE] [--frames 200]
        [--cases onnxruntime:fp32,onnxruntime:int8,tflite:fp32,tflite:int8] [--json OUT]

A case whose bundle has no artifact at that precision runs the next best precision and
the report says which artifacts were loaded (from the daemon's own log line).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edge_runtime.ops.bench import environment

DEFAULT_CASES = "onnxruntime:fp32,onnxruntime:int8,tflite:fp32,tflite:int8"
CLI = "import sys; from edge_runtime.cli import main; sys.exit(main())"
ARTIFACTS = re.compile(r"artifacts ([^;]+);")


def peak_rss_mib(argv: list[str]) -> tuple[float, int, str]:
    """Run ``argv`` to the end; its peak RSS in MiB, exit code and stderr."""
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    rss = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / (1024 * 1024)
    return rss, child.returncode, stderr


def run_case(bundle: Path, backend: str, precision: str, frames: int, state: Path) -> dict[str, Any]:
    argv = [
        sys.executable, "-c", CLI, "run", "--bundle", str(bundle),
        "--source", "synthetic", "--max-frames", str(frames), "--output", os.devnull,
        "--backend", backend, "--precision", precision, "--state-dir", str(state), "--device-id", "memory",
    ]  # fmt: skip
    start = time.perf_counter()
    rss, code, stderr = peak_rss_mib(argv)
    found = ARTIFACTS.search(stderr)
    case: dict[str, Any] = {
        "backend": backend,
        "precision": precision,
        "bundle": str(bundle),
        "frames": frames,
        "peak_rss_mib": round(rss, 1),
        "seconds": round(time.perf_counter() - start, 2),
        "artifacts": found.group(1).strip() if found else None,
        "exit_code": code,
    }
    if code != 0:
        case["error"] = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {code}"
    return case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="a bundle with ONNX artifacts")
    parser.add_argument("--tflite-bundle", type=Path, help="a bundle with TFLite artifacts (default: BUNDLE)")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--cases", default=DEFAULT_CASES, help="backend:precision,... (default: %(default)s)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    cases = [c.split(":", 1) for c in args.cases.split(",") if c.strip()]
    for case in cases:
        if len(case) != 2:
            parser.error(f"--cases: {':'.join(case)!r} is not BACKEND:PRECISION")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edge-memory-") as tmp:
        baseline, code, stderr = peak_rss_mib([sys.executable, "-c", "import edge_runtime.daemon.pipeline"])
        if code != 0:
            print(f"baseline import failed: {stderr.strip()}", file=sys.stderr)
            return 1
        print(
            f"baseline (python + import edge_runtime.daemon.pipeline): {baseline:.1f} MiB", file=sys.stderr, flush=True
        )
        for i, (backend, precision) in enumerate(cases, 1):
            bundle = args.tflite_bundle if backend == "tflite" and args.tflite_bundle else args.bundle
            print(f"[{i}/{len(cases)}] {backend} {precision} ({bundle}) ...", file=sys.stderr, flush=True)
            result = run_case(bundle, backend, precision, args.frames, Path(tmp) / f"state{i}")
            results.append(result)
    print(f"{'backend':<12} {'precision':<9} {'peak RSS MiB':>12} {'over baseline':>13}  artifacts")
    for r in results:
        if r["exit_code"] != 0:
            print(f"{r['backend']:<12} {r['precision']:<9} {'failed':>12} {'':>13}  {r['error']}")
            continue
        print(
            f"{r['backend']:<12} {r['precision']:<9} {r['peak_rss_mib']:>12.1f} "
            f"{r['peak_rss_mib'] - baseline:>13.1f}  {r['artifacts']}"
        )
    if args.json:
        report = {
            "schema": "edge-bench/1",
            "benchmark": "memory",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "baseline_import_mib": round(baseline, 1),
            "cases": results,
            "environment": environment(None),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0 if all(r["exit_code"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
