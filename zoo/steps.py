"""The steps every zoo model goes through, each a command of the project or a read of its output.

* :func:`split` / :func:`quantize`: ``python -m exporter.cli split|quantize`` (the user's commands);
* :func:`run_daemon`: ``python -m edge_runtime.cli run --bundle B --source FOLDER`` writing JSON lines;
* :func:`latency`: FP32 and INT8 engines timed in one interleaved run (``edge_runtime.ops.bench``),
  ``Engine.infer`` on the model's real images, so preprocessing and decoding count;
* :func:`split_error`, :func:`int8_graphs`, :func:`bundle_sizes`, :func:`gate_summary`: read back
  from the bundles' manifests, ``quantization.json`` and files.

Each command's whole output goes to a log file under the model's folder; a failure raises
:class:`~zoo.fetch.ZooError` naming the log and quoting its last line.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.fetch import ZooError

logger = logging.getLogger("zoo")

# The quantize gate is told to keep every INT8 graph (``--min-agreement`` must be > 0): the zoo
# measures INT8 itself against the oracle, rather than a bundle where the gate fell back to float.
KEEP_EVERY_INT8 = 0.01


def run_logged(command: Sequence[str], log: Path, what: str, *, timeout: float = 1800) -> float:
    """Run ``command`` (output to ``log``); return its wall time in seconds, raise on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        try:
            done = subprocess.run(
                list(command),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise ZooError(f"{what}: no result after {timeout:.0f} s (log: {log})") from None
    if done.returncode != 0:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
        raise ZooError(f"{what} failed (exit {done.returncode}): {lines[-1] if lines else 'no output'} (log: {log})")
    return time.monotonic() - started


def split(python: str, model: Path, bundle: Path, specs: Path, calib: Path, log: Path) -> float:
    """``edge-export split`` with the model's input and head specs, verified on the calibration images."""
    command = [python, "-m", "exporter.cli", "split", str(model), "-o", str(bundle), "--force"]
    command += ["--input-spec", str(specs / "input.toml"), "--head-spec", str(specs / "heads.toml")]
    command += ["--calib", str(calib)]
    return run_logged(command, log, "edge-export split")


def quantize(python: str, bundle: Path, out: Path, calib: Path, log: Path) -> float:
    """``edge-export quantize --precision int8`` calibrated on ``calib``, every INT8 graph kept."""
    command = [python, "-m", "exporter.cli", "quantize", str(bundle), "--calib", str(calib), "--precision", "int8"]
    command += ["--min-agreement", str(KEEP_EVERY_INT8), "-o", str(out), "--force"]
    return run_logged(command, log, "edge-export quantize")


def run_daemon(python: str, bundle: Path, images: Path, precision: str, output: Path, state: Path, log: Path) -> float:
    """The device daemon on the image folder (once through), JSON lines to ``output``."""
    output.unlink(missing_ok=True)
    command = [python, "-m", "edge_runtime.cli", "run", "--bundle", str(bundle), "--source", str(images)]
    command += ["--backend", "onnxruntime", "--precision", precision, "--output", str(output)]
    command += ["--state-dir", str(state), "--device-id", "zoo", "--no-loop"]
    return run_logged(command, log, f"edge-runtime run --precision {precision}")


def manifest(bundle: Path) -> dict[str, Any]:
    """The bundle's ``manifest.json``."""
    loaded: dict[str, Any] = json.loads((bundle / "manifest.json").read_text())
    return loaded


def split_error(bundle: Path) -> tuple[float, float]:
    """``(max_abs_error, tolerance)`` of the split's verification (trunk + heads vs the model)."""
    verification = manifest(bundle)["split"]["verification"]
    return float(verification["max_abs_error"]), float(verification["tolerance"])


def _graphs(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    graphs = {"trunk": data["trunk"]["artifacts"]}
    graphs.update({name: head["artifacts"] for name, head in data["heads"].items()})
    return graphs


def int8_graphs(bundle: Path) -> tuple[str, ...]:
    """The graphs (``trunk``, head names) that have an ONNX INT8 artifact."""
    return tuple(
        name
        for name, artifacts in _graphs(manifest(bundle)).items()
        if any(a["precision"] == "int8" and a["format"] == "onnx" for a in artifacts)
    )


def bundle_sizes(fp32: Path, int8: Path | None) -> dict[str, int]:
    """Bytes: ``fp32`` / ``int8`` the graphs a device loads at that precision (INT8 where there is
    one, else FP32), ``fp32_bundle`` / ``int8_bundle`` every file of each bundle folder."""
    sizes: dict[str, int] = {}
    for key, bundle in (("fp32", fp32), ("int8", int8)):
        if bundle is None:
            continue
        loaded = 0
        for artifacts in _graphs(manifest(bundle)).values():
            onnx = {a["precision"]: a["path"] for a in artifacts if a["format"] == "onnx"}
            path = onnx.get(key) or onnx["fp32"]
            loaded += (bundle / path).stat().st_size
        sizes[key] = loaded
        sizes[f"{key}_bundle"] = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    return sizes


def gate_summary(bundle: Path) -> list[str]:
    """One line per graph of ``quantization.json``: the gate's own agreement (float model vs INT8 on
    the held-back calibration frames), which layers stayed float."""
    path = bundle / "quantization.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    calib = data.get("calibration", {})
    lines = [
        f"quantize: {calib.get('calibration_frames')} calibration frames, {calib.get('held_out_frames')} held back"
        f" ({data.get('int8_settings', {}).get('calibration', '?')} calibration)"
    ]
    for decision in data.get("decisions", []):
        floats = decision.get("float_nodes") or []
        kept = f", {len(floats)} layers float" if floats else ""
        details = [t.get("detail", {}) for t in decision.get("fidelity", {}).values()]
        found = sum(d.get("reference_detections", 0) for d in details)
        basis = f" on {found} float detections" if details and any("reference_detections" in d for d in details) else ""
        lines.append(
            f"quantize gate: {decision['graph']} {decision['precision']} agreement {decision.get('agreement')}"
            f" vs the float model{basis} (held-back calibration frames){kept}"
        )
    return lines


def latency(
    fp32: Path, int8: Path, images: Sequence[Path], *, seconds: float, warmup: int = 3
) -> tuple[dict[str, float], dict[str, Any]]:
    """FP32 and INT8 ``Engine.infer`` on the decoded images, interleaved (one image per call, in turn);
    returns ``({fp32_p50, fp32_p90, int8_p50, int8_p90, int8_over_fp32}, environment)`` in ms."""
    from edge_runtime.frames.images import read_image
    from edge_runtime.inference.engine import Engine, EngineOptions
    from edge_runtime.ops.bench import environment, run_interleaved

    frames = [read_image(p) for p in images]
    engines = {
        "fp32": Engine.from_bundle(fp32, EngineOptions(precision="fp32")),
        "int8": Engine.from_bundle(int8, EngineOptions(precision="int8")),
    }
    counters = dict.fromkeys(engines, 0)

    def case(name: str) -> Any:
        engine = engines[name]

        def infer() -> None:
            engine.infer(frames[counters[name] % len(frames)])
            counters[name] += 1

        return infer

    try:
        timings = run_interleaved({name: case(name) for name in engines}, warmup=warmup, seconds=seconds)
    finally:
        for engine in engines.values():
            engine.close()
    out = {f"{name}_{q}": round(getattr(t, f"{q}_ms"), 3) for name, t in timings.items() for q in ("p50", "p90")}
    out["int8_over_fp32"] = round(timings["int8"].p50_ms / timings["fp32"].p50_ms, 3)
    meta = {**environment(), "rounds": timings["fp32"].n, "seconds": seconds, "machine": platform.machine()}
    return out, meta


__all__ = [
    "KEEP_EVERY_INT8",
    "bundle_sizes",
    "gate_summary",
    "int8_graphs",
    "latency",
    "manifest",
    "quantize",
    "run_daemon",
    "run_logged",
    "split",
    "split_error",
]
