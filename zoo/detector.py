"""One published detector end to end, checked against its package's own inference (the oracle).

:func:`run_detector` takes a :class:`DetectorCase` (the pinned model file, our specs for it in
``examples/zoo/<name>/``, the oracle) and folders of evaluation and calibration images, and:

1. runs the oracle on the evaluation images (``oracle.json``);
2. splits the model with the specs, verified on the calibration images (``bundle-fp32/``);
3. quantizes to INT8 calibrated on the calibration images, every INT8 graph kept (``bundle-int8/``);
4. runs the daemon on the evaluation images with ``--precision fp32`` and ``int8``
   (``results-fp32.jsonl``, ``results-int8.jsonl``) and matches the published, decoded detections
   with the oracle's (:mod:`zoo.matching`);
5. unless ``ctx.tflite`` is off: converts the FP32 bundle to TFLite (FP32 + INT8, the default gate)
   calibrated on the same calibration images (``bundle-tflite/``), runs the daemon with
   ``--backend tflite`` at FP32 and INT8 (``results-tflite-fp32.jsonl``, ``results-tflite-int8.jsonl``)
   and matches them with the oracle as the ONNX rows are; a failed conversion is recorded, not fatal;
6. times FP32 and INT8 (and LiteRT FP32 / INT8) in one interleaved run and sizes the bundles.

Checks (``ModelReport.checks``): ``split_error_within_tolerance``, ``oracle_detections_at_least_10``,
``results_decoded``, ``fp32_all_matched_no_extra``, ``int8_matched_at_least_90pct``; with TFLite
``tflite_fp32_agrees_0999`` and ``tflite_int8_runs`` (:func:`zoo.steps.tflite_checks`). The TFLite
INT8 figure against the oracle is reported, not checked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo import steps
from zoo.fetch import Member, ZooError, member_path
from zoo.matching import Comparison, Detection, compare, count, oracle_detections, read_results
from zoo.oracle import Oracle, run_oracle
from zoo.report import ModelReport, ZooContext

logger = logging.getLogger("zoo")

MIN_ORACLE_DETECTIONS = 10
MIN_INT8_AGREEMENT = 0.9
# FP32 mismatches quoted in the report's notes (all of them are in mismatches-fp32.txt).
MAX_NOTED = 10
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class DetectorCase:
    """What the zoo needs to know of one detector: ``package`` (``NAME==VERSION``), ``layout`` (a few
    words on the model and its decoder), the model file in a wheel, the folder of ``input.toml`` /
    ``heads.toml``, the head name, the oracle, and the class-name prefixes the committed table shows
    (empty: all)."""

    name: str
    package: str
    layout: str
    model: Member
    specs: Path
    head: str
    oracle: Oracle
    shown_classes: tuple[str, ...] = ()


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _images(folder: Path) -> list[Path]:
    from edge_runtime.frames.folders import IMAGE_SUFFIXES

    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _mismatches(tag: str, comparison: Comparison, work: Path) -> None:
    text = "\n".join(comparison.mismatches)
    (work / f"mismatches-{tag}.txt").write_text(text + ("\n" if text else ""))
    if comparison.mismatches:
        logger.info("[%s]   %d mismatches (mismatches-%s.txt)", work.name, len(comparison.mismatches), tag)


def _compared(
    tag: str,
    out: Path,
    seconds: float,
    case: DetectorCase,
    oracle: dict[str, list[Detection]],
    names: list[str],
    work: Path,
    say: Callable[[str], None],
) -> tuple[Comparison, bool]:
    """The daemon's published results in ``out`` matched with the oracle's (said, and the
    mismatches written to ``mismatches-<tag>.txt``); and whether they were decoded."""
    published, decoded = read_results(out, case.head, names)
    comparison = compare(oracle, published, threshold=case.oracle.threshold)
    a = comparison.agreement
    say(
        f"daemon {tag} in {seconds:.1f} s: {count(published)} published; matched {a.matched}/{a.oracle}"
        f" ({a.fraction:.1%}), {a.extra} extra"
    )
    _mismatches(tag, comparison, work)
    return comparison, decoded


def _tflite(
    ctx: ZooContext,
    case: DetectorCase,
    paths: tuple[Path, Path, Path, Path],
    oracle: dict[str, list[Detection]],
    say: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Comparison]]:
    """Step 5: ``paths`` = (FP32 bundle, TFLite bundle to write, evaluation images, calibration images);
    the TFLite summary (:func:`zoo.steps.tflite_summary` + ``convert_seconds``, ``decoded``) and the
    comparisons ``tflite-fp32`` / ``tflite-int8``."""
    fp32_bundle, bundle, images, calib = paths
    work, logs = ctx.work, ctx.work / "logs"
    try:
        seconds = steps.convert_tflite(ctx.python, fp32_bundle, bundle, calib, logs / "convert-tflite.log")
    except ZooError as exc:
        say(f"TFLite conversion failed: {exc}")
        return {"error": str(exc)}, {}
    summary = steps.tflite_summary(bundle)
    summary["convert_seconds"] = round(seconds, 1)
    say(f"TFLite conversion in {seconds:.0f} s; " + "; ".join(steps.tflite_notes(summary)[1:]))
    names = [p.name for p in _images(images)]
    comparisons: dict[str, Comparison] = {}
    decoded: dict[str, bool] = {}
    for precision in ("fp32", "int8"):
        tag = f"tflite-{precision}"
        out = work / f"results-{tag}.jsonl"
        try:
            seconds = steps.run_daemon(
                ctx.python, bundle, images, precision, out, work / "state" / tag, logs / f"run-{tag}.log", "tflite"
            )
        except ZooError as exc:
            say(f"daemon {tag} failed: {exc}")
            summary.setdefault("run_errors", {})[precision] = str(exc)
            decoded[precision] = False
            continue
        comparisons[tag], decoded[precision] = _compared(tag, out, seconds, case, oracle, names, work, say)
    summary["decoded"] = decoded
    return summary, comparisons


def run_detector(
    ctx: ZooContext, case: DetectorCase, images: Path, calib: Path, notes: list[str] | None = None
) -> ModelReport:
    """Every step of the module docstring for ``case``; the report of what was measured."""
    work, python = ctx.work, ctx.python
    notes = list(notes or [])
    logs = work / "logs"

    def say(text: str) -> None:
        logger.info("[%s] %s", case.name, text)

    evaluation = _images(images)
    names = [p.name for p in evaluation]
    model = member_path(ctx.cache, case.model)
    say(f"model {case.model.path} from {case.model.wheel.filename} (sha256 checked)")

    say(f"oracle: {case.package}'s own code on {len(names)} images (its virtualenv is made once)")
    oracle_doc = run_oracle(case.oracle, images, work / "oracle.json")
    oracle = oracle_detections(oracle_doc)
    missing = sorted(set(names) - set(oracle))
    if missing:
        raise ZooError(f"the oracle skipped {', '.join(missing)}")
    found = count(oracle)
    say(f"oracle found {found} detections; versions {oracle_doc.get('versions', {})}")

    fp32_bundle, int8_bundle = work / "bundle-fp32", work / "bundle-int8"
    seconds = steps.split(python, model, fp32_bundle, case.specs, calib, logs / "split.log")
    max_error, tolerance = steps.split_error(fp32_bundle)
    say(f"split in {seconds:.0f} s: max abs error {max_error:.3g} (tolerance {tolerance:g})")
    seconds = steps.quantize(python, fp32_bundle, int8_bundle, calib, logs / "quantize.log")
    graphs = steps.int8_graphs(int8_bundle)
    say(f"quantize in {seconds:.0f} s: INT8 graphs {', '.join(graphs) or 'none'}")
    notes += steps.gate_summary(int8_bundle)

    comparisons: dict[str, Comparison] = {}
    decoded = True
    for precision, bundle in (("fp32", fp32_bundle), ("int8", int8_bundle)):
        out = work / f"results-{precision}.jsonl"
        state = work / "state" / precision
        seconds = steps.run_daemon(python, bundle, images, precision, out, state, logs / f"run-{precision}.log")
        comparisons[precision], ok = _compared(precision, out, seconds, case, oracle, names, work, say)
        decoded = decoded and ok

    tflite_bundle = work / "bundle-tflite"
    tflite: dict[str, Any] = {}
    if ctx.tflite:
        tflite, tflite_comparisons = _tflite(ctx, case, (fp32_bundle, tflite_bundle, images, calib), oracle, say)
        comparisons.update(tflite_comparisons)
    timed_tflite = tflite_bundle if len(tflite.get("decoded", {})) == 2 else None

    timed = evaluation if not ctx.quick else evaluation[:3]
    which = "FP32 and INT8" + (", LiteRT FP32 and INT8" if timed_tflite else "")
    say(f"latency: {which} interleaved on {len(timed)} images")
    latency, environment = steps.latency(
        fp32_bundle, int8_bundle, timed, seconds=2.0 if ctx.quick else 10.0, tflite=timed_tflite
    )
    (work / "latency.json").write_text(json.dumps({"latency_ms": latency, "environment": environment}, indent=1))
    notes.append(
        f"latency: {environment['rounds']} rounds of each precision, {environment['cores']} cores, trunk threads"
        " the engine's default (all cores), heads 1"
    )
    say(f"latency p50 FP32 {latency['fp32_p50']:.1f} ms, INT8 {latency['int8_p50']:.1f} ms")
    if timed_tflite:
        say(f"latency p50 LiteRT FP32 {latency['tflite_fp32_p50']:.1f} ms, INT8 {latency['tflite_int8_p50']:.1f} ms")

    fp32, int8 = comparisons["fp32"].agreement, comparisons["int8"].agreement
    classes: dict[str, dict[str, int]] = {}
    for precision, comparison in comparisons.items():
        for label, c in comparison.classes.items():
            row = classes.setdefault(
                label, {"oracle": c.oracle, "fp32": 0, "fp32_extra": 0, "int8": 0, "int8_extra": 0}
            )
            key = precision.replace("-", "_")
            row[key], row[f"{key}_extra"] = c.matched, c.extra
    checks = {
        "split_error_within_tolerance": max_error <= tolerance,
        f"oracle_detections_at_least_{MIN_ORACLE_DETECTIONS}": found >= MIN_ORACLE_DETECTIONS,
        "results_decoded": decoded,
        "fp32_all_matched_no_extra": fp32.matched == fp32.oracle and fp32.extra == 0,
        f"int8_matched_at_least_{round(MIN_INT8_AGREEMENT * 100)}pct": int8.fraction >= MIN_INT8_AGREEMENT,
    }
    if ctx.tflite:
        checks.update(steps.tflite_checks(tflite))
        notes += steps.tflite_notes(tflite)
    tflite_fp32, tflite_int8 = (
        comparisons[tag].agreement if tag in comparisons else None for tag in ("tflite-fp32", "tflite-int8")
    )
    if tflite_int8 is not None:
        notes.append(
            f"TFLite INT8 (LiteRT) vs oracle: {tflite_int8.matched}/{tflite_int8.oracle} ({tflite_int8.fraction:.1%}),"
            f" {tflite_int8.extra} extra (reported, not checked; ONNX INT8: {int8.matched}/{int8.oracle})"
        )
    notes.append(f"lowest IoU of a matched FP32 detection: {comparisons['fp32'].min_matched_iou:.3f}")
    for precision, comparison in comparisons.items():
        a = comparison.agreement
        if comparison.mismatches:
            where = _rel(work / f"mismatches-{precision}.txt")
            notes.append(f"{precision}: {a.oracle - a.matched} missed, {a.extra} extra ({where})")
        if precision == "fp32":
            shown = comparison.mismatches[:MAX_NOTED]
            notes += [f"{precision}: {line}" for line in shown]
    return ModelReport(
        model=case.name,
        package=case.package,
        layout=case.layout,
        images=len(names),
        split_max_error=max_error,
        fp32=fp32,
        int8=int8,
        int8_graphs=graphs,
        tflite_fp32=tflite_fp32,
        tflite_int8=tflite_int8,
        tflite=tflite,
        latency_ms=latency,
        bundle_bytes=steps.bundle_sizes(fp32_bundle, int8_bundle),
        decoded=decoded,
        checks=checks,
        notes=tuple(notes),
        classes=dict(sorted(classes.items())),
        shown_classes=case.shown_classes,
        paths={
            "model": str(model),
            "images": _rel(images),
            "calibration": _rel(calib),
            "oracle": _rel(work / "oracle.json"),
            "bundle_fp32": _rel(fp32_bundle),
            "bundle_int8": _rel(int8_bundle),
            "results_fp32": _rel(work / "results-fp32.jsonl"),
            "results_int8": _rel(work / "results-int8.jsonl"),
            "latency": _rel(work / "latency.json"),
            **(
                {
                    "bundle_tflite": _rel(tflite_bundle),
                    "results_tflite_fp32": _rel(work / "results-tflite-fp32.jsonl"),
                    "results_tflite_int8": _rel(work / "results-tflite-int8.jsonl"),
                }
                if ctx.tflite
                else {}
            ),
        },
    )


__all__ = ["MIN_INT8_AGREEMENT", "MIN_ORACLE_DETECTIONS", "DetectorCase", "run_detector"]
