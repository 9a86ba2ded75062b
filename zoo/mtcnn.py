"""MTCNN's O-Net (facenet-pytorch 2.6.0) through the PyTorch frontend, against the package's own code.

``run(ctx)``:

1. the wheel (``pip download --no-deps facenet-pytorch==2.6.0``, sha256 checked) and its
   ``facenet_pytorch/data/onet.pt``;
2. the oracle environment (torch 2.13.0 CPU, facenet-pytorch without its dependencies, numpy,
   Pillow, requests, tqdm; torchvision is ``zoo/torchvision_stub``) runs
   ``MTCNN(keep_all=True).detect`` on ``ctx.work/images`` and records every O-Net input crop
   (48x48, the package's own crop and area resize) with O-Net's outputs
   (``zoo/oracles/mtcnn_oracle.py``);
3. ``edge-export split zoo/onet_model.py:build`` with ``examples/zoo/mtcnn-onet/{input,heads}.toml``;
   the FP32 graphs are run on the crops' input tensors against the package's O-Net (split error);
4. ``edge-runtime run`` on the folder of crop PNGs (FP32, then INT8 after ``edge-export quantize``
   calibrated on the crops); its published face probabilities, landmarks and box regression are
   compared with the package's O-Net outputs on the same crops.

5. unless ``ctx.tflite`` is off: ``edge-export convert --to tflite`` of the FP32 bundle (FP32 + INT8,
   the default gate) calibrated on the same crops (``bundle-tflite``), the daemon with ``--backend
   tflite`` at FP32 and INT8 compared the same way, and ``Engine.infer`` latency of ONNX Runtime and
   LiteRT at both precisions interleaved on the crops (:func:`zoo.steps.latency`).

Face decision: the package's ``prob[face] > 0.7`` (``thresholds[2]``). Landmark error: each point
mapped onto the crop's box in original pixels as the package does (``x = (x2 - x1 + 1) * p + x1 -
1``), its distance to the package's point divided by the box diagonal, averaged over the points of
the crops the package calls faces. Outputs go under ``ctx.work``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from exporter.toolenv import ToolEnv, ToolSpec, ensure_spec_env
from zoo import steps
from zoo.fetch import Member, Wheel, ZooError, member_path
from zoo.report import Agreement, ModelReport, ZooContext

logger = logging.getLogger("zoo")

REPO = Path(__file__).resolve().parent.parent
WHEEL = Wheel(
    "facenet-pytorch",
    "2.6.0",
    "facenet_pytorch-2.6.0-py3-none-any.whl",
    "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca",
)
ONET = Member(WHEEL, "facenet_pytorch/data/onet.pt", "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d")
ORACLE_SPEC = ToolSpec(
    name="oracle-mtcnn",
    requirements=(
        ("torch==2.13.0",),
        ("facenet-pytorch==2.6.0", "--no-deps"),
        ("numpy>=1.24,<2", "Pillow>=10.2,<10.3", "requests>=2,<3", "tqdm>=4,<5"),
    ),
    check_import="torch, numpy, PIL, requests, tqdm",
    purpose="MTCNN oracle",
)
ORACLE = REPO / "zoo" / "oracles" / "mtcnn_oracle.py"
SPECS = REPO / "examples" / "zoo" / "mtcnn-onet"
LAYOUT = "MTCNN O-Net: classification + box regression + 5 landmarks (PyTorch)"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FACE = 0.7  # the package's thresholds[2]
CROP = 48
LANDMARK_LIMIT = 0.02  # mean landmark error, fraction of the box diagonal
SPLIT_LIMIT = 1e-5


def _call(ctx: ZooContext, args: list[str], what: str, env: dict[str, str] | None = None) -> str:
    """``ctx.python ARGS`` in the repository; its output, or :class:`ZooError` with the last lines."""
    done = subprocess.run(
        [ctx.python, *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=1800,
    )
    output = done.stdout + done.stderr
    (ctx.work / "logs").mkdir(parents=True, exist_ok=True)
    (ctx.work / "logs" / f"{what.replace(' ', '_')}.log").write_text(output)
    if done.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise ZooError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return output


def oracle_env() -> tuple[ToolEnv, float | None]:
    """The oracle environment and how long building it took (``None``: it was already there)."""
    started = time.monotonic()
    env = ensure_spec_env(ORACLE_SPEC)
    took = time.monotonic() - started
    return env, (None if took < 5 else round(took, 1))


def images_of(folder: Path) -> list[Path]:
    """The photographs to run the package on: ``folder``'s images in name order."""
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not images:
        raise ZooError(f"{folder}: no images to detect faces on")
    return images


def run_oracle(env: ToolEnv, images: list[Path], out: Path) -> dict[str, Any]:
    """The package's detection on ``images``: ``out/oracle.json``, ``out/crops/``, ``out/crops_float.npy``."""
    if out.exists():
        shutil.rmtree(out)
    env.run([str(ORACLE), "--out", str(out), *map(str, images)], cwd=REPO, what="mtcnn oracle", timeout=1800)
    record: dict[str, Any] = json.loads((out / "oracle.json").read_text())
    return record


def replay_error(record: dict[str, Any]) -> float:
    """Largest distance (original pixels) between the package's final landmarks and those recomputed
    from the recorded O-Net outputs and boxes: proof the recording is the stage the package used."""
    crops = {c["id"]: c for c in record["crops"]}
    worst = 0.0
    for image in record["images"].values():
        for points in image["points"]:
            candidates = [
                landmarks_px(np.array(crops[i]["onet"]["landmarks"]), crops[i]["box"]) for i in image["crops"]
            ]
            worst = max(worst, min(float(np.abs(c - np.array(points)).max()) for c in candidates))
    return worst


def landmarks_px(normalized: np.ndarray, box: list[float]) -> np.ndarray:
    """O-Net's 10 values (5 x, 5 y; 0..1 of the crop) → 5 points in original pixels, as the package maps them."""
    x1, y1, x2, y2 = box
    return np.stack([(x2 - x1 + 1) * normalized[:5] + x1 - 1, (y2 - y1 + 1) * normalized[5:] + y1 - 1], 1)


def export(ctx: ZooContext, weights: Path, bundle: Path) -> None:
    """``edge-export split zoo/onet_model.py:build`` (FP32) with the zoo's input and head specs."""
    args = ["-m", "exporter.cli", "split", "zoo/onet_model.py:build", "-o", str(bundle), "--force"]
    args += ["--input-spec", str(SPECS / "input.toml"), "--head-spec", str(SPECS / "heads.toml")]
    _call(ctx, args, "split", env={"EDGE_ZOO_ONET_WEIGHTS": str(weights)})


def split_error(bundle: Path, record: dict[str, Any], crops: np.ndarray) -> dict[str, float]:
    """Max |bundle FP32 graphs - package O-Net| per output over the crops (the PNG inputs, as the daemon
    sees them)."""
    import onnxruntime as ort

    manifest = json.loads((bundle / "manifest.json").read_text())
    x = ((crops.astype(np.float32) - 127.5) * 0.0078125).transpose(0, 3, 1, 2).copy()
    trunk = ort.InferenceSession(str(bundle / "trunk.fp32.onnx"), providers=["CPUExecutionProvider"])
    tensors: dict[str, np.ndarray] = {manifest["input"]["name"]: x}
    tensors.update(zip(manifest["trunk"]["outputs"], trunk.run(None, tensors), strict=True))
    for name, head in manifest["heads"].items():
        graph = ort.InferenceSession(str(bundle / f"heads/{name}.fp32.onnx"), providers=["CPUExecutionProvider"])
        feed = {i: tensors[i] for i in head["inputs"]}
        tensors.update(zip(head["outputs"], graph.run(None, feed), strict=True))
    want = {k: np.array([c["onet_png"][k] for c in record["crops"]], np.float32) for k in ("box", "landmarks", "prob")}
    return {k: float(np.abs(tensors[k] - v).max()) for k, v in want.items()}


def run_daemon(
    ctx: ZooContext, bundle: Path, frames: Path, precision: str, backend: str = "onnxruntime"
) -> list[dict[str, Any]]:
    """``edge-runtime run`` on the crop folder; its result lines, one per crop in name order."""
    tag = precision if backend == "onnxruntime" else f"{backend}-{precision}"
    output = ctx.work / f"results.{tag}.jsonl"
    state = ctx.work / f"state-{tag}"
    shutil.rmtree(state, ignore_errors=True)
    output.unlink(missing_ok=True)  # the daemon appends
    args = ["-m", "edge_runtime.cli", "run", "--bundle", str(bundle), "--source", str(frames)]
    args += ["--state-dir", str(state), "--output", str(output), "--precision", precision, "--device-id", "zoo"]
    args += ["--backend", backend]
    _call(ctx, args, f"run {tag}")
    lines = [json.loads(line) for line in output.read_text().splitlines() if line.strip()]
    return [line for line in lines if "results" in line]


def compare(record: dict[str, Any], lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Published results against the package's O-Net outputs, crop by crop."""
    crops = record["crops"]
    if len(lines) != len(crops):
        raise ZooError(f"the daemon published {len(lines)} results for {len(crops)} crops")
    oracle_face = np.array([c["onet"]["prob"][1] for c in crops])
    oracle_top1 = np.array([c["onet"]["prob"][1] > c["onet"]["prob"][0] for c in crops])
    ours_face = np.array(
        [dict(zip(r["results"]["face"]["labels"], r["results"]["face"]["scores"], strict=True))["face"] for r in lines]
    )
    top1_ours = np.array([r["results"]["face"]["labels"][0] == "face" for r in lines])
    want = oracle_face > FACE
    got = ours_face > FACE
    png_face = np.array([c["onet_png"]["prob"][1] for c in crops])
    errors, png_errors, box_px, box_rel = [], [], [], []
    for crop, line in zip(crops, lines, strict=True):
        x1, y1, x2, y2 = crop["box"]
        w, h = x2 - x1 + 1, y2 - y1 + 1
        diagonal = float(np.hypot(w, h))
        points = np.array(line["results"]["landmarks"]["points"], np.float64) / CROP  # crop pixels → 0..1
        ours = np.concatenate([points[:, 0], points[:, 1]])
        theirs = np.array(crop["onet"]["landmarks"])
        delta = landmarks_px(ours, crop["box"]) - landmarks_px(theirs, crop["box"])
        errors.append(float(np.hypot(delta[:, 0], delta[:, 1]).mean()) / diagonal)
        delta = landmarks_px(ours, crop["box"]) - landmarks_px(np.array(crop["onet_png"]["landmarks"]), crop["box"])
        png_errors.append(float(np.hypot(delta[:, 0], delta[:, 1]).max()) / diagonal)
        reg_ours = np.array(line["results"]["box"]["values"])
        reg = np.array(crop["onet"]["box"])
        corner = (reg_ours - reg) * np.array([w, h, w, h])
        box_px.append(float(np.hypot(corner[0::2], corner[1::2]).mean()) / diagonal)
        box_rel.append(float(np.linalg.norm(reg_ours - reg) / max(np.linalg.norm(reg), 1e-6)))
    face_errors = np.array(errors)[want]
    return {
        "crops": len(crops),
        "agreement": Agreement(oracle=int(want.sum()), matched=int((want & got).sum()), extra=int((got & ~want).sum())),
        "top1": float((oracle_top1 == top1_ours).mean()),
        "prob_max_abs_error": float(np.abs(ours_face - oracle_face).max()),
        "landmark_error": float(face_errors.mean()) if face_errors.size else float("nan"),
        "landmark_error_max": float(face_errors.max()) if face_errors.size else float("nan"),
        "landmark_error_all_crops": float(np.mean(errors)),
        # against the package's O-Net on the same uint8 PNG: the engine alone, without the rounding
        "png_prob_max_abs_error": float(np.abs(ours_face - png_face).max()),
        "png_landmark_error_max": float(max(png_errors)),
        "box_error": float(np.array(box_px)[want].mean()) if want.any() else float("nan"),
        "box_relative_error_median": float(np.median(np.array(box_rel)[want])) if want.any() else float("nan"),
        "latency_ms": float(np.mean([r["latency_ms"]["total"] for r in lines])),
    }


def _artifact_bytes(bundle: Path, precision: str) -> tuple[int, tuple[str, ...]]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    graphs = {"trunk": manifest["trunk"], **manifest["heads"]}
    size, names = 0, []
    for name, graph in graphs.items():
        for artifact in graph["artifacts"]:
            if artifact["precision"] == precision and artifact["format"] == "onnx":
                size += (bundle / artifact["path"]).stat().st_size
                names.append(name)
    return size, tuple(names)


def _summary(name: str, figures: dict[str, Any]) -> str:
    a: Agreement = figures["agreement"]
    f = {k: v for k, v in figures.items() if isinstance(v, float)}
    pct = {k: 100 * v for k, v in f.items()}
    return (
        f"{name}: face decisions (p > {FACE}) {a.matched}/{a.oracle}, {a.extra} extra; top-1 {f['top1']:.4f} over "
        f"{figures['crops']} crops; face prob max |error| {f['prob_max_abs_error']:.2e}; landmarks "
        f"{pct['landmark_error']:.3f}% of the box diagonal (max {pct['landmark_error_max']:.3f}%, all crops "
        f"{pct['landmark_error_all_crops']:.3f}%); box regression {pct['box_error']:.3f}% of the diagonal, median "
        f"relative error {f['box_relative_error_median']:.2e}; against the package on the same uint8 PNGs: face prob "
        f"max |error| {f['png_prob_max_abs_error']:.1e}, landmarks max {pct['png_landmark_error_max']:.3f}% of the "
        "diagonal"
    )


def _tflite(
    ctx: ZooContext, record: dict[str, Any], bundle: Path, frames: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Step 5 without the latency: the TFLite summary (:func:`zoo.steps.tflite_summary` with
    ``convert_seconds`` and ``decoded``, or ``{"error": ...}``) and the figures per precision."""
    out = ctx.work / "bundle-tflite"
    try:
        seconds = steps.convert_tflite(ctx.python, bundle, out, frames, ctx.work / "logs" / "convert-tflite.log")
    except ZooError as exc:
        logger.info("  mtcnn: TFLite conversion failed: %s", exc)
        return {"error": str(exc)}, {}
    summary = steps.tflite_summary(out)
    summary["convert_seconds"] = round(seconds, 1)
    figures: dict[str, Any] = {}
    decoded: dict[str, bool] = {}
    for precision in ("fp32", "int8"):
        try:
            figures[precision] = compare(record, run_daemon(ctx, out, frames, precision, backend="tflite"))
        except ZooError as exc:
            summary.setdefault("run_errors", {})[precision] = str(exc)
        decoded[precision] = precision in figures
    summary["decoded"] = decoded
    return summary, figures


def run(ctx: ZooContext) -> ModelReport:
    """The whole procedure (see the module docstring); writes under ``ctx.work``."""
    ctx.work.mkdir(parents=True, exist_ok=True)
    weights = member_path(ctx.cache, ONET)
    env, built_s = oracle_env()
    images = images_of(ctx.work / "images")
    logger.info("  mtcnn: oracle on %d images", len(images))
    record = run_oracle(env, images, ctx.work / "oracle")
    frames = ctx.work / "oracle" / "crops"
    crops = np.clip(np.rint(np.load(ctx.work / "oracle" / "crops_float.npy")), 0, 255).astype(np.uint8)
    replayed = replay_error(record)
    bundle, bundle8 = ctx.work / "bundle", ctx.work / "bundle-int8"
    export(ctx, weights, bundle)
    split_errors = split_error(bundle, record, crops)
    split_max = max(split_errors.values())
    manifest_error = json.loads((bundle / "manifest.json").read_text())["split"]["verification"]["max_abs_error"]
    fp32 = compare(record, run_daemon(ctx, bundle, frames, "fp32"))
    fp32_bytes, _ = _artifact_bytes(bundle, "fp32")
    notes = [
        f"{len(record['crops'])} O-Net crops from {len(images)} images; the package kept "
        f"{sum(len(i['boxes']) for i in record['images'].values())} faces after its NMS",
        "split: bundle FP32 graphs vs the package's O-Net (torch) on the crop PNGs, max |error| "
        + ", ".join(f"{k} {v:.1e}" for k, v in split_errors.items())
        + f"; the exporter's own check (ONNX vs trunk + heads) {manifest_error:.1e}",
        f"oracle replay: final landmarks recomputed from the recorded O-Net outputs within {replayed:.1e} px",
        "oracle venv " + ("reused" if built_s is None else f"built in {built_s:.0f} s"),
        _summary("FP32", fp32),
    ]
    checks = {
        "faces_at_least_10": fp32["agreement"].oracle >= 10,
        "oracle_replay": replayed < 0.01,
        "split_exact": split_max <= SPLIT_LIMIT,
        "fp32_face_decisions": fp32["agreement"].fraction == 1.0 and fp32["agreement"].extra == 0,
        "fp32_landmarks_2pct": fp32["landmark_error"] <= LANDMARK_LIMIT,
    }
    # INT8 takes seconds for this model: quick runs do it too
    args = ["-m", "exporter.cli", "quantize", str(bundle), "-o", str(bundle8), "--force"]
    _call(ctx, [*args, "--calib", str(frames), "--precision", "int8"], "quantize")
    int8_bytes, int8_graphs = _artifact_bytes(bundle8, "int8")
    int8 = compare(record, run_daemon(ctx, bundle8, frames, "int8"))
    notes.append(_summary(f"INT8 ({', '.join(int8_graphs) or 'no graph'} quantized)", int8))
    notes.append("INT8 was calibrated on these same crops (quantize holds a quarter back for its gate): optimistic")
    checks["int8_top1_90pct"] = int8["top1"] >= 0.9
    runs = {"fp32": fp32, "int8": int8}
    tflite: dict[str, Any] = {}
    latency = {"fp32": round(fp32["latency_ms"], 3), "int8": round(int8["latency_ms"], 3)}
    if ctx.tflite:
        tflite, litert = _tflite(ctx, record, bundle, frames)
        runs.update({f"tflite_{k}": v for k, v in litert.items()})
        checks.update(steps.tflite_checks(tflite))
        notes += steps.tflite_notes(tflite)
        notes += [_summary(f"TFLite {k.upper()} (LiteRT)", v) for k, v in litert.items()]
        if len(litert) == 2:
            crops_png = images_of(frames)[:16]
            timed, environment = steps.latency(
                bundle, bundle8, crops_png, seconds=2.0 if ctx.quick else 10.0, tflite=ctx.work / "bundle-tflite"
            )
            latency.update(timed)
            notes.append(
                f"latency: daemon means (fp32, int8) and Engine.infer p50 interleaved over {len(crops_png)} crops,"
                f" {environment['rounds']} rounds of each of ONNX Runtime and LiteRT FP32 / INT8"
            )
    figures = {k: {n: v for n, v in f.items() if n != "agreement"} for k, f in runs.items()}
    (ctx.work / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
    return ModelReport(
        model="mtcnn-onet",
        package="facenet-pytorch 2.6.0",
        layout=LAYOUT,
        images=len(images),
        split_max_error=split_max,
        fp32=fp32["agreement"],
        int8=int8["agreement"],
        int8_graphs=int8_graphs,
        tflite_fp32=runs["tflite_fp32"]["agreement"] if "tflite_fp32" in runs else None,
        tflite_int8=runs["tflite_int8"]["agreement"] if "tflite_int8" in runs else None,
        tflite=tflite,
        landmark_error=fp32["landmark_error"],
        latency_ms=latency,
        bundle_bytes={"fp32": fp32_bytes, "int8": int8_bytes},
        decoded=True,
        checks=checks,
        notes=tuple(notes),
    )
