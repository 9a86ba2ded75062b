"""Peak RSS of the daemon, per backend and precision: what a board must have free to run a bundle.

Each case is a whole ``edge-runtime run`` process (``--source synthetic``, ``--max-frames N``,
JSON lines to /dev/null), so the number is what the operating system charged to the daemon:
Python, numpy, the runtime's libraries, every session and the frame buffers. It is read from the
child's ``ru_maxrss`` (``os.wait4``), not sampled.

The baseline is per backend: the daemon's process writes down every module it had imported
when it stopped, and a second process only imports those (Python, numpy, the
backend's runtime, OpenCV where the preprocessing uses it, ``edge_runtime``). What a case takes
beyond its baseline is the daemon's own: sessions, buffers, threads. The goal (reported, not
asserted): peak RSS <= baseline + 2 x weights + 30 MiB, where the weights are the sizes of the
graph files the case loaded.

Usage::

    python benchmarks/memory.py BUNDLE [--tflite-bundle TFLITE_BUNDLE] [--frames 200]
        [--cases onnxruntime:fp32,onnxruntime:int8,tflite:fp32,tflite:int8] [--json OUT]

A case whose bundle has no artifact at that precision runs the next best precision and
the report says which artifacts were loaded (from the daemon's own log lines).
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
# The daemon's process: the command line, then the modules it imported (for the baseline).
CLI = (
    "import sys; from edge_runtime.cli import main; code = main(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(' '.join(sorted(m for m, mod in list(sys.modules.items()) "
    "if getattr(mod, '__spec__', None) is not None and m != '__main__'))); sys.exit(code)"
)
ARTIFACTS = re.compile(r"artifacts ([^;]+);")
GRAPH_LINE = re.compile(r"graph (\S+): (\S+) (\S+), ")
FORMATS = {"onnxruntime": "onnx", "tflite": "tflite"}
GOAL_SLACK_MIB = 30.0


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


def loaded_weights_mib(bundle: Path, stderr: str) -> float:
    """The size of the graph files the daemon loaded (its ``graph NAME: BACKEND PRECISION`` lines)."""
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    graphs = {"trunk": manifest["trunk"], **manifest["heads"]}
    total = 0
    for graph, backend, precision in GRAPH_LINE.findall(stderr):
        for artifact in graphs[graph]["artifacts"]:
            if artifact["format"] == FORMATS[backend] and artifact["precision"] == precision:
                total += (bundle / artifact["path"]).stat().st_size
                break
    return total / 2**20


def baseline_mib(modules: str) -> float:
    """Peak RSS of a process that only imports ``modules`` (space-separated module names; one that
    does not import on its own, such as a platform-specific or already-removed one, is skipped)."""
    code = (
        f"import importlib\nfor m in {modules.split()!r}:\n    try:\n        importlib.import_module(m)\n"
        "    except Exception:\n        pass"
    )
    rss, exit_code, stderr = peak_rss_mib([sys.executable, "-c", code])
    if exit_code != 0:
        raise RuntimeError(f"the baseline import failed: {stderr.strip().splitlines()[-1:]}")
    return rss


def run_case(bundle: Path, backend: str, precision: str, frames: int, state: Path) -> dict[str, Any]:
    modules_file = state.parent / f"{state.name}.modules"
    argv = [
        sys.executable, "-c", CLI, str(modules_file), "run", "--bundle", str(bundle),
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
    modules = modules_file.read_text(encoding="utf-8")
    weights = loaded_weights_mib(bundle, stderr)
    baseline = baseline_mib(modules)
    goal = baseline + 2 * weights + GOAL_SLACK_MIB
    case.update(
        imported=sorted({m.split(".")[0] for m in modules.split() if not m.startswith("_")}),
        imported_modules=len(modules.split()),
        baseline_import_mib=round(baseline, 1),
        weights_mib=round(weights, 2),
        over_baseline_mib=round(rss - baseline, 1),
        goal_mib=round(goal, 1),
        goal_met=rss <= goal,
    )
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
        for i, (backend, precision) in enumerate(cases, 1):
            bundle = args.tflite_bundle if backend == "tflite" and args.tflite_bundle else args.bundle
            print(f"[{i}/{len(cases)}] {backend} {precision} ({bundle}) ...", file=sys.stderr, flush=True)
            result = run_case(bundle, backend, precision, args.frames, Path(tmp) / f"state{i}")
            results.append(result)
    print(
        f"{'backend':<12} {'precision':<9} {'peak MiB':>9} {'baseline':>9} {'over':>6} {'weights':>8} "
        f"{'goal':>7}  artifacts"
    )
    for r in results:
        if r["exit_code"] != 0:
            print(f"{r['backend']:<12} {r['precision']:<9} {'failed':>9}  {r['error']}")
            continue
        print(
            f"{r['backend']:<12} {r['precision']:<9} {r['peak_rss_mib']:>9.1f} {r['baseline_import_mib']:>9.1f} "
            f"{r['over_baseline_mib']:>6.1f} {r['weights_mib']:>8.2f} {r['goal_mib']:>7.1f}"
            f"{'' if r['goal_met'] else ' (not met)'}  {r['artifacts']}"
        )
    baselines = {r["backend"]: r["baseline_import_mib"] for r in results if r["exit_code"] == 0}
    if args.json:
        report = {
            "schema": "edge-bench/1",
            "benchmark": "memory",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "python benchmarks/memory.py " + " ".join(sys.argv[1:]),
            "goal": f"peak_rss_mib <= baseline_import_mib + 2 x weights_mib + {GOAL_SLACK_MIB:g} MiB",
            "baseline_import_mib": baselines,
            "cases": results,
            "environment": environment(None),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0 if all(r["exit_code"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
