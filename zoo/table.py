"""The zoo's results table: ``zoo.<arch>.md`` and ``zoo.<arch>.json`` (committed under
``benchmarks/results/``), and ``index.json`` (the build folder's full record, read by later steps).

The committed files show only the classes a model allows (:attr:`ModelReport.shown_classes`:
nudenet's ``FACE_*``): other classes' rows and every note naming one are left out there; the
totals cover every class. ``index.json`` keeps everything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zoo.report import ModelReport

SCHEMA = "edge-zoo/1"
MIB = 1024 * 1024


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities (a run that stopped early) as None, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> Path:
    """Strict JSON (no NaN), indented, newline-terminated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=1, allow_nan=False) + "\n")
    return path


def hidden_classes(report: ModelReport) -> list[str]:
    """The classes of ``report`` the committed table leaves out."""
    if not report.shown_classes:
        return []
    return [c for c in report.classes if not c.startswith(report.shown_classes)]


def public_dict(report: ModelReport) -> dict[str, Any]:
    """``report.to_dict()`` for the committed JSON: hidden classes and notes naming them left out,
    paths outside the repository (the download cache) dropped."""
    out = report.to_dict()
    hidden = hidden_classes(report)
    out["classes"] = {c: v for c, v in report.classes.items() if c not in hidden}
    out["classes_not_shown"] = len(hidden)
    out["notes"] = [n for n in report.notes if not any(c in n for c in hidden)]
    out["paths"] = {k: v for k, v in report.paths.items() if not Path(v).is_absolute()}
    if report.tflite:
        out["litert_graphs"] = {p: litert_graphs(report, p) for p in ("fp32", "int8")}
    return out


def _agreement(report: ModelReport, precision: str) -> str:
    """``precision``: ``fp32``, ``int8``, ``tflite_fp32`` or ``tflite_int8``."""
    a = getattr(report, precision)
    if a is None:
        return "failed" if precision.startswith("tflite") and "error" in report.tflite else "-"
    text = f"{a.matched}/{a.oracle} ({a.fraction:.1%}), {a.extra} extra"
    runs = report.tflite.get("runs", {}).get("int8", [])
    if (
        precision == "tflite_int8"
        and runs
        and not any(r["backend"] == "tflite" and r["precision"] == "int8" for r in runs)
    ):
        text += " (no INT8 graph: the gate kept FP32)"
    return text


def litert_graphs(report: ModelReport, precision: str = "int8") -> str:
    """What ``--backend tflite --precision PRECISION`` ran: ``trunk, face`` when every graph was on
    LiteRT at that precision, else each graph with its backend and precision
    (``trunk LiteRT int8, box ORT fp32``); ``convert failed`` or ``-`` (not run)."""
    if "error" in report.tflite:
        return "convert failed"
    runs = report.tflite.get("runs", {}).get(precision)
    if not runs:
        return "-"
    if all(r["backend"] == "tflite" and r["precision"] == precision for r in runs):
        return ", ".join(r["graph"] for r in runs)
    titles = {"tflite": "LiteRT", "onnxruntime": "ORT"}
    return ", ".join(f"{r['graph']} {titles.get(r['backend'], r['backend'])} {r['precision']}" for r in runs)


def _litert_latency(latency: Mapping[str, float]) -> str:
    """``LiteRT FP32 / INT8 p50 (each / ONNX Runtime at its precision)``."""
    if "tflite_fp32_p50" not in latency or "tflite_int8_p50" not in latency:
        return "-"
    return (
        f"{latency['tflite_fp32_p50']:.1f} / {latency['tflite_int8_p50']:.1f}"
        f" ({latency['tflite_fp32_over_fp32']:.2f}x / {latency['tflite_int8_over_int8']:.2f}x)"
    )


def _pair(
    values: Mapping[str, float | int], a: str, b: str, scale: float = 1.0, digits: int = 1, ratio: bool = True
) -> str:
    """``a / b (b/a)`` from ``values``; a key ``x_p50`` falls back to ``x`` (reports that give one figure)."""
    x_raw = values.get(a, values.get(a.removesuffix("_p50")))
    y_raw = values.get(b, values.get(b.removesuffix("_p50")))
    if x_raw is None or y_raw is None:
        return "-"
    x, y = x_raw / scale, y_raw / scale
    times = f" ({y / x:.2f}x)" if x and ratio else ""
    return f"{x:.{digits}f} / {y:.{digits}f}{times}"


def _row(report: ModelReport) -> str:
    failed = [name for name, ok in report.checks.items() if not ok]
    verdict = "pass" if report.passed else "FAIL: " + ", ".join(failed)
    error = "-" if math.isnan(report.split_max_error) else f"{report.split_max_error:.2g}"
    cells = [
        f"{report.model} ({report.package})",
        report.layout,
        str(report.images),
        error,
        _agreement(report, "fp32"),
        _agreement(report, "int8"),
        ", ".join(report.int8_graphs) or "-",
        _agreement(report, "tflite_fp32"),
        _agreement(report, "tflite_int8"),
        litert_graphs(report),
        _pair(report.latency_ms, "fp32_p50", "int8_p50"),
        _litert_latency(report.latency_ms),
        _pair(report.bundle_bytes, "fp32", "int8", MIB, 2),
        _pair(report.bundle_bytes, "fp32_bundle", "int8_bundle", MIB, 1, ratio=False),
        verdict,
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| model | layout | images | split max error | FP32 vs oracle | INT8 vs oracle | INT8 graphs "
    "| TFLite FP32 vs oracle | TFLite INT8 vs oracle | LiteRT graphs (INT8) "
    "| latency p50 ms FP32 / INT8 | latency p50 ms LiteRT FP32 / INT8 (vs ONNX Runtime) "
    "| graphs MiB FP32 / INT8 | bundle folder MiB FP32 / INT8 | checks |\n"
    "| --- | --- | ---: | ---: | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def markdown(reports: Sequence[ModelReport], skipped: Mapping[str, str], meta: Mapping[str, Any]) -> str:
    """The committed markdown table (see the module docstring)."""
    env = meta.get("environment", {})
    lines = [
        f"# Model zoo on {env.get('machine', '?')}",
        "",
        "Published models from PyPI, split, quantized and run by the daemon on real images; the daemon's",
        "published, decoded results compared with each package's own inference code (the oracle) on the",
        "same images: same class and IoU >= 0.9. FP32 must match every oracle detection with nothing extra;",
        "INT8 (every graph INT8, calibrated on other images) must match >= 90%. Latency: `Engine.infer`",
        "(preprocessing, trunk, heads, decoding) on the same images, FP32 and INT8 interleaved in one run.",
        "Sizes: the graphs a device loads at each precision, and every file of each bundle folder (the INT8",
        "bundle keeps its FP32 graphs beside the INT8 ones, and both carry self-test data).",
        "TFLite: the FP32 bundle converted by `edge-export convert --to tflite` (FP32 and INT8, the default",
        "gate, calibrated on the INT8 step's images) and run by the daemon with `--backend tflite`; a graph",
        "without a TFLite artifact runs on ONNX Runtime (LiteRT graphs: what INT8 ran; the notes give the",
        "reasons). LiteRT latency is timed in the same interleaved run as ONNX Runtime's.",
        "",
        f"Machine: {env.get('cpu', '?')}, {env.get('cores', '?')} cores, onnxruntime {env.get('onnxruntime', '?')},"
        f" Python {env.get('python', '?')}. Command: `{meta.get('command', 'make zoo')}`"
        f" ({meta.get('seconds', 0):.0f} s{', quick mode' if meta.get('quick') else ''}).",
        "",
        HEADER,
        *(_row(r) for r in reports),
    ]
    for name, why in skipped.items():
        lines.append(f"\nSkipped: {name}: {why}.")
    for report in reports:
        hidden = hidden_classes(report)
        lines += ["", f"## {report.model}", ""]
        if report.error:
            lines.append(f"Stopped: {report.error}")
        if report.classes:
            keys = ["oracle", "fp32", "fp32_extra", "int8", "int8_extra"]
            titles = ["oracle", "FP32 matched", "FP32 extra", "INT8 matched", "INT8 extra"]
            for tag, title in (("tflite_fp32", "TFLite FP32"), ("tflite_int8", "TFLite INT8")):
                if any(tag in c for c in report.classes.values()):
                    keys += [tag, f"{tag}_extra"]
                    titles += [f"{title} matched", f"{title} extra"]
            lines += ["| class | " + " | ".join(titles) + " |", "| --- |" + " ---: |" * len(titles)]
            for label, c in report.classes.items():
                if label not in hidden:
                    lines.append(f"| {label} | " + " | ".join(str(c.get(k, 0)) for k in keys) + " |")
            if hidden:
                shown = ", ".join(p + "*" for p in report.shown_classes)
                lines.append(f"\n{len(hidden)} other classes not shown here (only {shown}); totals above count them.")
        notes = [n for n in public_dict(report)["notes"]]
        if notes:
            lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def write_table(
    reports: Sequence[ModelReport], skipped: Mapping[str, str], out: Path, arch: str, meta: Mapping[str, Any]
) -> list[Path]:
    """``zoo.<arch>.md`` and ``zoo.<arch>.json`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"zoo.{arch}.md"
    md.write_text(markdown(reports, skipped, meta))
    data = {"schema": SCHEMA, **meta, "models": [public_dict(r) for r in reports], "skipped": dict(skipped)}
    return [md, write_json(out / f"zoo.{arch}.json", data)]


def write_index(path: Path, reports: Sequence[ModelReport], work: Mapping[str, Path]) -> Path:
    """``index.json``: every report in full, with its work folder and ``report.json``."""
    entries = []
    for report in reports:
        entry = report.to_dict()
        folder = work[report.model]
        entry["paths"] = {**report.paths, "work": str(folder), "report": str(folder / "report.json")}
        entries.append(entry)
    return write_json(path, entries)


__all__ = [
    "SCHEMA",
    "hidden_classes",
    "litert_graphs",
    "markdown",
    "public_dict",
    "write_index",
    "write_json",
    "write_table",
]
