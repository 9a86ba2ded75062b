"""The steps every zoo model goes through, each a command of the project or a read of its output.

* :func:`split` / :func:`quantize` / :func:`convert_tflite`: ``python -m exporter.cli
  split|quantize|convert`` (the user's commands);
* :func:`run_daemon`: ``python -m edge_runtime.cli run --bundle B --source FOLDER`` writing JSON lines
  (``--backend onnxruntime`` or ``tflite``);
* :func:`latency`: FP32 and INT8 engines (and LiteRT FP32 / INT8 ones) timed in one interleaved run
  (``edge_runtime.ops.bench``), ``Engine.infer`` on the model's real images, so preprocessing and
  decoding count;
* :func:`split_error`, :func:`int8_graphs`, :func:`bundle_sizes`, :func:`gate_summary`,
  :func:`tflite_summary`: read back from the bundles' manifests, ``quantization.json``,
  ``tflite.json`` and files; :func:`tflite_checks` / :func:`tflite_notes` judge and describe the
  TFLite summary.

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

# The quantize gate is told to keep every INT8 graph (``--min-agreement`` must be > 0; and
# ``--keep-unmeasured`` where the calibration images show too few detections to measure): the zoo
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
    command += ["--min-agreement", str(KEEP_EVERY_INT8), "--keep-unmeasured", "-o", str(out), "--force"]
    return run_logged(command, log, "edge-export quantize")


def convert_tflite(python: str, bundle: Path, out: Path, calib: Path, log: Path) -> float:
    """``edge-export convert --to tflite`` (FP32 and INT8, the default gate) calibrated on ``calib``;
    a failure names the converter's error line (the log keeps its whole output)."""
    command = [python, "-m", "exporter.cli", "convert", str(bundle), "--to", "tflite", "--calib", str(calib)]
    command += ["-o", str(out), "--force"]
    try:
        return run_logged(command, log, "edge-export convert --to tflite", timeout=3600)
    except ZooError as exc:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
        said = [line for line in lines if line.startswith("edge-export: error:")]
        cause = [line for line in lines if "Error: " in line and not line.startswith("edge-export")]
        if not said:
            raise
        raise ZooError(" ".join([said[-1], *cause[-1:], f"(log: {log})"])) from exc


def run_daemon(
    python: str,
    bundle: Path,
    images: Path,
    precision: str,
    output: Path,
    state: Path,
    log: Path,
    backend: str = "onnxruntime",
) -> float:
    """The device daemon on the image folder (once through), JSON lines to ``output``."""
    output.unlink(missing_ok=True)
    command = [python, "-m", "edge_runtime.cli", "run", "--bundle", str(bundle), "--source", str(images)]
    command += ["--backend", backend, "--precision", precision, "--output", str(output)]
    command += ["--state-dir", str(state), "--device-id", "zoo", "--no-loop"]
    return run_logged(command, log, f"edge-runtime run --backend {backend} --precision {precision}")


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


def gate_frames_text(report: dict[str, Any]) -> str:
    """What a gate report says its gate measured on (``"3 held-back frames"``, or with the
    calibration frames too), and the tasks it could not measure."""
    frames = report.get("gate_frames") or {}
    text = frames.get("basis") or "held-back calibration frames"
    blind = frames.get("blind") or []
    return text + (
        f"; too few float detections to measure {', '.join(blind)} (INT8 refused, FP32 judged on the raw outputs)"
        if blind
        else ""
    )


def gate_summary(bundle: Path) -> list[str]:
    """One line per graph of ``quantization.json``: the gate's own agreement (float model vs INT8 on
    the frames the gate measured on), which layers stayed float."""
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
            f" vs the float model{basis} ({gate_frames_text(data)}){kept}"
        )
    return lines


#: The FP32 TFLite agreement with ONNX every task must reach (``tflite_fp32_agrees_0999``).
TFLITE_FP32_AGREEMENT = 0.999


def tflite_summary(bundle: Path) -> dict[str, Any]:
    """What ``convert`` decided and what LiteRT runs: ``gate`` (``tflite.json``: per graph and
    precision kept or not, the reason, each task's agreement and the float detections it stands on),
    ``fp32_agreement`` / ``int8_agreement`` (per task, the lowest over the graphs of that precision
    the gate measured, with ``basis``: the fewest float detections under it, None for other tasks),
    and ``runs`` (per precision, ``--backend tflite``'s plan by
    :func:`~edge_runtime.inference.artifact_choice.plan_artifacts`: each graph's backend and
    precision, and for a graph not on LiteRT at that precision the plan's and the gate's reasons)."""
    from edge_runtime.bundle.reader import load_bundle
    from edge_runtime.inference.artifact_choice import plan_artifacts

    data = json.loads((bundle / "tflite.json").read_text())
    gate = []
    for decision in data.get("decisions", []):
        tasks = {
            task: {
                "value": f.get("value"),
                "basis": (f.get("detail") or {}).get("reference_detections"),
                "metric": f.get("metric"),
            }
            for task, f in (decision.get("fidelity") or {}).items()
        }
        keys = ("graph", "precision", "accepted", "reason", "agreement")
        gate.append({**{k: decision.get(k) for k in keys}, "tasks": tasks})
    summary: dict[str, Any] = {"gate": gate, "gate_frames": gate_frames_text(data)}
    for precision in ("fp32", "int8"):
        lowest: dict[str, dict[str, Any]] = {}
        for row in (r for r in gate if r["precision"] == precision):
            for task, f in row["tasks"].items():
                if f["value"] is None:
                    continue
                seen = lowest.setdefault(task, {"value": f["value"], "basis": f["basis"], "metric": f["metric"]})
                seen["value"] = min(seen["value"], f["value"])
                if f["basis"] is not None:
                    seen["basis"] = f["basis"] if seen["basis"] is None else min(seen["basis"], f["basis"])
        summary[f"{precision}_agreement"] = lowest
    manifest = load_bundle(bundle, warn_unchecked=False).manifest
    summary["tasks"] = list(manifest.heads)
    runs: dict[str, list[dict[str, Any]]] = {}
    for precision in ("fp32", "int8"):
        plan = plan_artifacts(manifest, "tflite", precision)
        runs[precision] = []
        for choice in plan.choices.values():
            entry: dict[str, Any] = {
                "graph": choice.graph,
                "backend": choice.backend,
                "precision": choice.artifact.precision,
            }
            if choice.reason:
                gate_says = [
                    f"tflite.json {r['precision']}: {r['reason']}"
                    for r in gate
                    if r["graph"] == choice.graph and not r["accepted"]
                ]
                entry["reason"] = "; ".join([choice.reason, *gate_says])
            runs[precision].append(entry)
    summary["runs"] = runs
    return summary


def tflite_checks(summary: dict[str, Any]) -> dict[str, bool]:
    """``tflite_fp32_agrees_0999``: every task has a FP32 TFLite agreement with ONNX >= 0.999 from the
    gate, measured on at least one float detection where the task detects (a gate that saw none
    measured nothing); ``tflite_int8_runs``: the daemon ran the bundle with ``--backend tflite
    --precision int8``, decoded results, at least the trunk on LiteRT (a graph the gate kept at
    FP32 or on ONNX Runtime is listed with its reason in the notes and the table). A failed
    conversion fails both."""
    agreement = summary.get("fp32_agreement", {})
    tasks = summary.get("tasks", [])
    fp32_ok = bool(tasks) and all(
        task in agreement and agreement[task]["value"] >= TFLITE_FP32_AGREEMENT and agreement[task]["basis"] != 0
        for task in tasks
    )
    trunk = [r for r in summary.get("runs", {}).get("int8", []) if r["graph"] == "trunk"]
    on_litert = bool(trunk) and trunk[0]["backend"] == "tflite"
    int8_ok = bool(summary.get("decoded", {}).get("int8")) and on_litert
    return {"tflite_fp32_agrees_0999": fp32_ok, "tflite_int8_runs": int8_ok}


def tflite_notes(summary: dict[str, Any]) -> list[str]:
    """The report's lines on the conversion: its time or error, what LiteRT ran per graph (with the
    reasons of fallbacks), the gate's agreement per task."""
    if "error" in summary:
        return [f"TFLite: conversion failed: {summary['error']}"]
    lines = [f"TFLite: converted (FP32 + INT8, the default gate) in {summary['convert_seconds']:.0f} s"]
    for precision, runs in summary["runs"].items():
        ran = "; ".join(
            f"{r['graph']} {'LiteRT' if r['backend'] == 'tflite' else 'ONNX Runtime'} {r['precision']}"
            + (f" ({r['reason']})" if r.get("reason") else "")
            for r in runs
        )
        lines.append(f"TFLite: --backend tflite --precision {precision} ran: {ran}")
    for precision in ("fp32", "int8"):
        found = summary.get(f"{precision}_agreement", {})
        if not found:
            continue
        text = ", ".join(
            f"{task} {f['value']:.4f}"
            + (
                f" on {f['basis']} float detections"
                if f["basis"] is not None
                else f" ({f.get('metric')} of the raw outputs)"
                if f.get("metric") == "relative_error"
                else ""
            )
            for task, f in found.items()
        )
        where = f"{summary.get('gate_frames') or 'held-back calibration frames'}, lowest graph"
        lines.append(f"TFLite gate: {precision.upper()} agreement with ONNX per task ({where}): {text}")
    for precision, error in summary.get("run_errors", {}).items():
        lines.append(f"TFLite: the daemon at {precision} failed: {error}")
    return lines


def latency(
    fp32: Path,
    int8: Path,
    images: Sequence[Path],
    *,
    seconds: float,
    warmup: int = 3,
    tflite: Path | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """FP32 and INT8 ``Engine.infer`` on the decoded images, interleaved (one image per call, in turn);
    returns ``({fp32_p50, fp32_p90, int8_p50, int8_p90, int8_over_fp32}, environment)`` in ms. With
    ``tflite`` (a converted bundle) LiteRT FP32 and INT8 engines join the same rounds
    (``tflite_fp32_*``, ``tflite_int8_*``) with their ratios to ONNX Runtime at the same precision
    (``tflite_fp32_over_fp32``, ``tflite_int8_over_int8``)."""
    from edge_runtime.frames.images import read_image
    from edge_runtime.inference.engine import Engine, EngineOptions
    from edge_runtime.ops.bench import environment, run_interleaved

    frames = [read_image(p) for p in images]
    engines = {
        "fp32": Engine.from_bundle(fp32, EngineOptions(precision="fp32")),
        "int8": Engine.from_bundle(int8, EngineOptions(precision="int8")),
    }
    if tflite is not None:
        for precision in ("fp32", "int8"):
            engines[f"tflite_{precision}"] = Engine.from_bundle(
                tflite, EngineOptions(backend="tflite", precision=precision)
            )
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
    for name, base in (("tflite_fp32", "fp32"), ("tflite_int8", "int8")):
        if name in timings:
            out[f"{name}_over_{base}"] = round(timings[name].p50_ms / timings[base].p50_ms, 3)
    meta = {**environment(), "rounds": timings["fp32"].n, "seconds": seconds, "machine": platform.machine()}
    return out, meta


__all__ = [
    "KEEP_EVERY_INT8",
    "TFLITE_FP32_AGREEMENT",
    "bundle_sizes",
    "convert_tflite",
    "gate_summary",
    "int8_graphs",
    "latency",
    "manifest",
    "quantize",
    "run_daemon",
    "run_logged",
    "split",
    "split_error",
    "tflite_checks",
    "tflite_notes",
    "tflite_summary",
]
