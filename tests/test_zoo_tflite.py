"""The zoo's TFLite column: ``tflite.json`` and the LiteRT plan read back (:func:`zoo.steps.tflite_summary`),
its two checks, the table's TFLite cells and the ``--tflite`` / ``--no-tflite`` / ``--quick`` choice.

The end-to-end runs (a conversion takes minutes per model) are ``python -m zoo`` itself, not tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from zoo import steps
from zoo.__main__ import parse_args, wants_tflite
from zoo.report import Agreement, ModelReport
from zoo.table import litert_graphs, markdown, public_dict


def _fidelity(value: float, found: int | None = None) -> dict[str, Any]:
    detail = {} if found is None else {"reference_detections": found}
    return {"metric": "m", "value": value, "samples": 3, "detail": detail}


@pytest.mark.exporter
def test_summary_takes_the_lowest_graph_per_task_and_explains_each_fallback(demo_bundle: Path, tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(demo_bundle, tmp_path / "bundle"))
    heads = list(json.loads((bundle / "manifest.json").read_text())["heads"])
    assert "box" in heads
    decisions = [
        {"graph": "trunk", "precision": "fp32", "accepted": True, "reason": "agreement 0.9995 >= 0.99",
         "agreement": 0.9995, "fidelity": {h: _fidelity(1.0 if h != "box" else 0.9995, 7) for h in heads}},
        {"graph": "box", "precision": "fp32", "accepted": True, "reason": "ok", "agreement": 0.9991,
         "fidelity": {"box": _fidelity(0.9991, 7)}},
        {"graph": "box", "precision": "int8", "accepted": False, "reason": "agreement 0.95 < 0.99: not written",
         "agreement": 0.95, "fidelity": {"box": _fidelity(0.95, 7)}},
        {"graph": "mask", "precision": "int8", "accepted": False, "reason": "not converted", "agreement": None,
         "fidelity": {}},
    ]  # fmt: skip
    (bundle / "tflite.json").write_text(json.dumps({"decisions": decisions}))
    summary = steps.tflite_summary(bundle)
    assert summary["tasks"] == heads
    # the lower of trunk and head
    assert summary["fp32_agreement"]["box"] == {"value": 0.9991, "basis": 7, "metric": "m"}
    assert summary["int8_agreement"] == {"box": {"value": 0.95, "basis": 7, "metric": "m"}}
    # This bundle has no TFLite artifact at all: the runtime's rule puts every graph on ONNX Runtime,
    # and the plan's reason carries the gate's for the graphs tflite.json rejected.
    runs = {r["graph"]: r for r in summary["runs"]["int8"]}
    assert list(runs) == ["trunk", *heads]
    assert all(r["backend"] == "onnxruntime" and r["reason"].startswith("no tflite") for r in runs.values())
    assert "tflite.json int8: agreement 0.95 < 0.99" in runs["box"]["reason"]
    assert "tflite.json int8: not converted" in runs["mask"]["reason"]
    assert "tflite.json" not in runs["trunk"]["reason"]
    # Every task >= 0.999 at FP32 on 7 float detections; decoded INT8 results alone do not make the INT8
    # check pass: the trunk is not on LiteRT.
    summary["decoded"] = {"fp32": True, "int8": True}
    assert steps.tflite_checks(summary) == {"tflite_fp32_agrees_0999": True, "tflite_int8_runs": False}
    notes = steps.tflite_notes({**summary, "convert_seconds": 12.0})
    assert notes[0] == "TFLite: converted (FP32 + INT8, the default gate) in 12 s"
    assert any("box 0.9991 on 7 float detections" in n for n in notes)
    assert any("mask ONNX Runtime fp32 (no tflite" in n for n in notes)


def _summary(
    values: dict[str, tuple[float, int | None]], trunk_backend: str = "tflite", trunk_precision: str = "int8"
) -> dict[str, Any]:
    return {
        "tasks": list(values),
        "fp32_agreement": {t: {"value": v, "basis": b} for t, (v, b) in values.items()},
        "runs": {"int8": [{"graph": "trunk", "backend": trunk_backend, "precision": trunk_precision}]},
        "decoded": {"fp32": True, "int8": True},
    }


def test_checks_need_every_task_measured_at_0999_and_the_trunk_on_litert() -> None:
    good = steps.tflite_checks(_summary({"face": (0.9995, 12), "shape": (1.0, None)}))
    assert good == {"tflite_fp32_agrees_0999": True, "tflite_int8_runs": True}
    assert not steps.tflite_checks(_summary({"face": (0.9989, 12)}))["tflite_fp32_agrees_0999"]
    # the gate saw no float detection: 1.0 there measures nothing
    assert not steps.tflite_checks(_summary({"face": (1.0, 0)}))["tflite_fp32_agrees_0999"]
    missing = _summary({"face": (1.0, 5)})
    missing["tasks"] = ["face", "landmarks"]
    assert not steps.tflite_checks(missing)["tflite_fp32_agrees_0999"]
    assert not steps.tflite_checks(_summary({"face": (1.0, 5)}, "onnxruntime"))["tflite_int8_runs"]
    # the gate rejected the INT8 trunk: LiteRT runs its FP32 file (listed with the reason), still on LiteRT
    assert steps.tflite_checks(_summary({"face": (1.0, 5)}, "tflite", "fp32"))["tflite_int8_runs"]
    undecoded = _summary({"face": (1.0, 5)})
    undecoded["decoded"]["int8"] = False
    assert not steps.tflite_checks(undecoded)["tflite_int8_runs"]
    failed = steps.tflite_checks({"error": "edge-export: error: onnx2tf failed"})
    assert failed == {"tflite_fp32_agrees_0999": False, "tflite_int8_runs": False}
    assert steps.tflite_notes({"error": "boom"}) == ["TFLite: conversion failed: boom"]


def _report(**kwargs: Any) -> ModelReport:
    base: dict[str, Any] = {
        "model": "nudenet",
        "package": "nudenet==3.4.2",
        "layout": "YOLOv8n",
        "images": 2,
        "split_max_error": 0.0,
        "fp32": Agreement(4, 4, 0),
        "int8": Agreement(4, 2, 1),
        "classes": {"FACE_FEMALE": {"oracle": 4, "fp32": 4, "int8": 2, "tflite_fp32": 4, "tflite_int8": 3}},
        "checks": {"tflite_int8_runs": True},
    }
    base.update(kwargs)
    return ModelReport(**base)


def test_table_has_the_tflite_columns() -> None:
    runs = {
        "int8": [
            {"graph": "trunk", "backend": "tflite", "precision": "int8"},
            {"graph": "face", "backend": "onnxruntime", "precision": "fp32", "reason": "no tflite artifact"},
        ],
        "fp32": [
            {"graph": "trunk", "backend": "tflite", "precision": "fp32"},
            {"graph": "face", "backend": "tflite", "precision": "fp32"},
        ],
    }
    latency = {"fp32_p50": 10.0, "int8_p50": 5.0, "tflite_fp32_p50": 12.0, "tflite_int8_p50": 4.0}
    latency.update({"tflite_fp32_over_fp32": 1.2, "tflite_int8_over_int8": 0.8})
    report = _report(
        tflite_fp32=Agreement(4, 4, 0), tflite_int8=Agreement(4, 3, 0), tflite={"runs": runs}, latency_ms=latency
    )
    assert litert_graphs(report) == "trunk LiteRT int8, face ORT fp32"
    assert litert_graphs(report, "fp32") == "trunk, face"
    text = markdown([report], {}, {})
    assert "TFLite FP32 vs oracle | TFLite INT8 vs oracle | LiteRT graphs (INT8)" in text
    assert "| 4/4 (100.0%), 0 extra | 3/4 (75.0%), 0 extra | trunk LiteRT int8, face ORT fp32 |" in text
    assert "| 12.0 / 4.0 (1.20x / 0.80x) |" in text
    assert "| FACE_FEMALE | 4 | 4 | 0 | 2 | 0 | 4 | 0 | 3 | 0 |" in text
    public = public_dict(report)
    assert public["tflite_int8"]["fraction"] == 0.75 and public["litert_graphs"]["fp32"] == "trunk, face"
    fp32_only = {"int8": runs["fp32"], "fp32": runs["fp32"]}  # the gate rejected every INT8 graph
    kept = _report(tflite_int8=Agreement(4, 4, 0), tflite={"runs": fp32_only}, classes={})
    assert "| 4/4 (100.0%), 0 extra (no INT8 graph: the gate kept FP32) | trunk LiteRT fp32, face LiteRT fp32 |" in (
        markdown([kept], {}, {})
    )
    failed = _report(tflite={"error": "onnx2tf failed"}, classes={})
    assert "| failed | failed | convert failed |" in markdown([failed], {}, {})
    plain = markdown([_report(classes={})], {}, {})
    assert "| - | - | - |" in plain and "TFLite FP32 matched" not in plain


@pytest.mark.parametrize(
    ("argv", "want"),
    [([], True), (["--quick"], False), (["--quick", "--tflite"], True), (["--no-tflite"], False)],
)
def test_tflite_is_left_out_of_quick_runs_unless_asked(argv: list[str], want: bool) -> None:
    assert wants_tflite(parse_args(argv)) is want
