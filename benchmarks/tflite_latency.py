"""LiteRT (TFLite, XNNPACK) INT8 vs FP32 trunk latency, with ONNX Runtime FP32 / INT8 beside it.

Issue 6's speed target: the full-integer TFLite trunk at <= 0.55x the FP32 TFLite trunk's p50
on this machine (XNNPACK). Ratio targets apply to a MobileNetV2-sized trunk
(>= 2 ms); the tiny demo trunk is reported too.

For each model, in ONE interleaved run (``edge_runtime.ops.bench.run_interleaved``):

1. split it as the other benchmarks do (``bench_support.split_for_bench``);
2. ``exporter.tflite.convert_bundle``: onnx2tf (its own cached venv) writes
   ``tflite/trunk.fp32.tflite`` and the full-integer ``tflite/trunk.int8.tflite`` (kept only when
   it passes the exporter's fidelity gate, ``--min-agreement``);
3. ``exporter.quantize.quantize_bundle``: the ONNX Runtime INT8 (QDQ) trunk, same calibration
   frames, same gate;
4. time the trunk alone: LiteRT ``Interpreter(model_path, num_threads=N)`` (XNNPACK is its
   default delegate: the script checks that one ``DELEGATE`` node covers the whole graph, and
   keeps the "Created TensorFlow Lite XNNPACK delegate" line LiteRT logs when a fresh process
   loads the file), one call being
   ``set_tensor`` + ``invoke`` + ``get_tensor`` of the signature's tensors (the INT8 model
   takes int8 NHWC input: the frame is transposed and quantized with the input's scale and
   zero point before timing); ONNX Runtime sessions as the runtime makes them (spinning off,
   ``ORT_ENABLE_ALL``), ``run`` on the NCHW frame; every case at each ``--threads`` count;
5. report p50/p90/p99 and the p50 ratios INT8 / FP32 per runtime and thread count, plus the
   cosine similarity of each trunk's output with the FP32 ONNX trunk on the held-out frames.

Calibration: the demo trunk gets ``build/demo_calib`` (64 PNGs) when it exists, else frames of
``examples/train_demo_model.make_frames``; the MobileNetV2-sized trunk (random weights) gets
random-normal inputs: its fidelity numbers are only a rough signal.

Usage::

    python benchmarks/tflite_latency.py --seconds 20 --json benchmarks/results/tflite_latency.x86_64.json
    python benchmarks/tflite_latency.py --models demo --seconds 3      # a quick look

Converted bundles are kept under ``--work`` (``build/tflite_latency``) and reused; ``--reconvert``
makes them again. The MobileNetV2-sized model is built by ``benchmarks/mobilenet_multitask.py``
when ``build/mbv2_multitask.onnx`` is missing (needs torch).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from bench_support import ROOT, package_version, progress, split_for_bench

from edge_runtime.bundle.reader import read_manifest
from edge_runtime.ops.bench import Timing, environment, format_timings, run_interleaved, write_report

logger = logging.getLogger("tflite_latency")

MBV2_MODEL = ROOT / "build" / "mbv2_multitask.onnx"
DEMO_CALIB = ROOT / "build" / "demo_calib"
MODELS = ("demo", "mbv2")
RUNTIMES = ("litert", "ort")
PRECISIONS = ("fp32", "int8")
TARGET = 0.55  # issue 6: LiteRT INT8 trunk p50 <= 0.55x FP32
XNNPACK_LOG = "XNNPACK delegate"


@dataclass
class Trunk:
    """One trunk graph ready to time: ``call()`` runs it once on the prepared input;
    ``outputs(frames)`` returns its float output for each NCHW frame (for the fidelity check)."""

    runtime: str
    precision: str
    threads: int
    path: Path
    call: Callable[[], Any]
    outputs: Callable[[np.ndarray], list[np.ndarray]]
    notes: dict[str, Any] = field(default_factory=dict)


def litert_log(path: Path, threads: int) -> list[str]:
    """What LiteRT logs (to file descriptor 2, from native code) when it loads ``path``, in a fresh
    process: it says "Created TensorFlow Lite XNNPACK delegate" once per process only, and the
    exporter has already loaded interpreters in this one."""
    code = (
        "import sys\nfrom ai_edge_litert.interpreter import Interpreter\n"
        "Interpreter(model_path=sys.argv[1], num_threads=int(sys.argv[2])).allocate_tensors()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), str(threads)], capture_output=True, text=True, check=False
    )
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    """A CPU session with the runtime's settings (spinning off, ``ORT_ENABLE_ALL``)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_trunk(path: Path, precision: str, threads: int, input_name: str, output: str, frame: np.ndarray) -> Trunk:
    sess = ort_session(path, threads)
    feed = {input_name: frame}

    def outputs(frames: np.ndarray) -> list[np.ndarray]:
        return [sess.run([output], {input_name: frames[i : i + 1]})[0] for i in range(len(frames))]

    return Trunk("ort", precision, threads, path, functools.partial(sess.run, [output], feed), outputs)


def quantize(value: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    """Float -> the tensor's dtype with its (scale, zero point); a cast when not quantized."""
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail["quantization"]
    if dtype.kind not in "iu" or scale == 0.0:
        return value.astype(dtype)
    limits = np.iinfo(dtype)
    return np.clip(np.round(value / scale) + zero, limits.min, limits.max).astype(dtype)


def dequantize(value: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    scale, zero = detail["quantization"]
    if np.dtype(detail["dtype"]).kind not in "iu" or scale == 0.0:
        return value.astype(np.float32)
    return ((value.astype(np.float32) - zero) * scale).astype(np.float32)


def litert_trunk(
    path: Path,
    precision: str,
    threads: int,
    tensors: Mapping[str, Any],
    input_name: str,
    output: str,
    frame: np.ndarray,
) -> Trunk:
    """A LiteRT interpreter of the trunk, fed through its ``serving_default`` signature's tensors
    (names and layouts from the manifest's tensor map, never by position)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    runner = interpreter.get_signature_runner("serving_default")
    in_map, out_map = tensors[input_name], tensors[output]
    in_detail = runner.get_input_details()[in_map["name"]]
    out_detail = runner.get_output_details()[out_map["name"]]
    in_index, out_index = in_detail["index"], out_detail["index"]
    in_perm, out_perm = in_map["perm"], out_map["perm"]

    def prepare(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(quantize(x.transpose(in_perm) if in_perm else x, in_detail))

    ready = prepare(frame)

    def call() -> np.ndarray:
        interpreter.set_tensor(in_index, ready)
        interpreter.invoke()
        return interpreter.get_tensor(out_index)

    def outputs(frames: np.ndarray) -> list[np.ndarray]:
        values = []
        for i in range(len(frames)):
            interpreter.set_tensor(in_index, prepare(frames[i : i + 1]))
            interpreter.invoke()
            value = dequantize(interpreter.get_tensor(out_index), out_detail)
            values.append(value.transpose(np.argsort(out_perm)) if out_perm else value)
        return values

    ops = interpreter._get_ops_details()  # the only view of which nodes a delegate took over
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    delegated_inputs = {int(i) for op in delegates for i in op["inputs"]}
    delegated_outputs = {int(i) for op in delegates for i in op["outputs"]}
    # one partition that reads the graph input and writes its output: XNNPACK runs all of it
    whole = len(delegates) == 1 and in_index in delegated_inputs and out_index in delegated_outputs
    notes = {
        "input": {"dtype": np.dtype(in_detail["dtype"]).name, "shape": [int(d) for d in in_detail["shape"]],
                  "quantization": [float(v) for v in in_detail["quantization"]]},
        "output": {"dtype": np.dtype(out_detail["dtype"]).name, "shape": [int(d) for d in out_detail["shape"]],
                   "quantization": [float(v) for v in out_detail["quantization"]]},
        "nodes": len(ops),
        "delegate_nodes": len(delegates),
        "whole_graph_delegated": whole,
        "log": litert_log(path, threads),
    }  # fmt: skip
    return Trunk("litert", precision, threads, path, call, outputs, notes)


def cosine_min(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> float:
    """The lowest cosine similarity over the frames."""
    values = []
    for a, b in zip(reference, candidate, strict=True):
        x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        denom = np.linalg.norm(x) * np.linalg.norm(y)
        values.append(float(x @ y / denom) if denom > 0 else float(np.array_equal(x, y)))
    return min(values)


def demo_calibration(work: Path, frames: int) -> Path:
    """``build/demo_calib`` when it exists, else ``make_frames`` frames saved as a uint8 .npy."""
    if DEMO_CALIB.is_dir() and any(DEMO_CALIB.iterdir()):
        return DEMO_CALIB
    sys.path.insert(0, str(ROOT))
    try:
        from examples.train_demo_model import make_frames
    except ImportError as exc:
        raise SystemExit(f"the demo calibration frames need examples/train_demo_model.py and torch: {exc}") from None
    path = work / "demo_calib.npy"
    np.save(path, np.asarray(make_frames(frames, 0)[0], dtype=np.uint8))
    return path


def normal_calibration(bundle: Path, work: Path, frames: int, seed: int) -> Path:
    """Random-normal model inputs of the bundle's input shape, saved as a float32 .npy."""
    shape = read_manifest(bundle).input.shape
    path = work / "normal_calib.npy"
    np.save(path, np.random.default_rng(seed).standard_normal((frames, *shape[1:])).astype(np.float32))
    return path


def prepare_model(model: str, args: argparse.Namespace) -> dict[str, Any]:
    """Split, quantize for ONNX Runtime and convert to TFLite under ``--work``/``model`` (reused
    unless ``--reconvert``); returns the paths and the calibration source."""
    from exporter.quantize import quantize_bundle
    from exporter.quantize_options import QuantizeOptions
    from exporter.tflite import TfliteOptions, convert_bundle

    work = args.work / model
    bundle, onnx_int8, tflite = work / "bundle", work / "onnx_int8", work / "tflite"
    if args.reconvert and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    source = MBV2_MODEL if model == "mbv2" else None
    if source is not None and not source.exists():
        logger.info("%s: building %s (benchmarks/mobilenet_multitask.py, torch)", model, source)
        subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "mobilenet_multitask.py"), "-o", str(source)], check=True
        )
    if not (bundle / "manifest.json").exists():
        logger.info("%s: splitting", model)
        split_for_bench(bundle, **({"model": source} if source else {}))
    if model == "demo":
        calib = demo_calibration(work, args.calib_frames)
        calib_note = f"{calib.relative_to(ROOT) if calib.is_relative_to(ROOT) else calib.name}"
    else:
        calib = normal_calibration(bundle, work, args.calib_frames, args.seed)
        calib_note = f"{args.calib_frames} random-normal inputs N(0, 1), seed {args.seed} (random weights)"
    if not (onnx_int8 / "manifest.json").exists():
        logger.info("%s: ONNX Runtime INT8 (quantize_bundle)", model)
        quantize_bundle(bundle, onnx_int8, QuantizeOptions(calib=calib, min_agreement=args.min_agreement, force=True))
    if not (tflite / "manifest.json").exists():
        logger.info("%s: TFLite FP32 + INT8 (convert_bundle, onnx2tf)", model)
        options = TfliteOptions(calib=calib, precisions=PRECISIONS, min_agreement=args.min_agreement, force=True)
        convert_bundle(bundle, tflite, options)
    else:
        logger.info("%s: reusing %s (--reconvert to make it again)", model, work)
    return {"bundle": bundle, "onnx_int8": onnx_int8, "tflite": tflite, "calib": calib, "calib_note": calib_note}


def held_out_frames(bundle: Path, calib: Path, count: int) -> np.ndarray:
    """The frames both exporters held back (the same split), as NCHW model inputs."""
    from exporter.calibration import load_calibration

    _, held = load_calibration(calib, read_manifest(bundle).input).split(0.25)
    return held[:count]


def decisions(bundle: Path, report: str) -> dict[str, Any]:
    """The exporter's gate decisions for the trunk, by precision."""
    data = json.loads((bundle / report).read_text())
    return {
        d["precision"]: {"accepted": d["accepted"], "reason": d["reason"], "agreement": d.get("agreement")}
        for d in data["decisions"]
        if d["graph"] == "trunk"
    }


def load_trunks(model: str, paths: Mapping[str, Any], threads: Sequence[int], frame: np.ndarray) -> list[Trunk]:
    """Every trunk the bundles have, at every thread count; missing ones are logged."""
    manifest = read_manifest(paths["tflite"])
    input_name, output = manifest.input.name, manifest.trunk.outputs[0]
    if len(manifest.trunk.outputs) != 1:
        logger.warning("%s: the trunk has %d outputs; timing fetches %s", model, len(manifest.trunk.outputs), output)
    int8_manifest = read_manifest(paths["onnx_int8"])
    trunks = []
    for t in threads:
        for precision in PRECISIONS:
            artifact = manifest.trunk.artifact("tflite", precision)
            if artifact is None:
                logger.warning("%s: no TFLite %s trunk (rejected by the gate?)", model, precision)
            else:
                path = paths["tflite"] / artifact.path
                trunks.append(litert_trunk(path, precision, t, artifact.extra["tensors"], input_name, output, frame))
            artifact = (int8_manifest if precision == "int8" else manifest).trunk.artifact("onnx", precision)
            if artifact is None:
                logger.warning("%s: no ONNX %s trunk (rejected by the gate?)", model, precision)
            else:
                root = paths["onnx_int8"] if precision == "int8" else paths["tflite"]
                trunks.append(ort_trunk(root / artifact.path, precision, t, input_name, output, frame))
    return trunks


def key(model: str, runtime: str, precision: str, threads: int) -> str:
    return f"{model}/{runtime}-{precision}/t{threads}"


def ratios_of(timings: Mapping[str, Timing], models: Sequence[str], threads: Sequence[int]) -> dict[str, float]:
    """p50 ratios of the same run and thread count: INT8 / FP32 per runtime, LiteRT / ORT per precision."""
    ratios = {}
    for m in models:
        for t in threads:
            for runtime in RUNTIMES:
                a, b = timings.get(key(m, runtime, "int8", t)), timings.get(key(m, runtime, "fp32", t))
                if a and b:
                    ratios[f"{m}/{runtime}-int8_over_fp32/t{t}"] = a.p50_ms / b.p50_ms
            for precision in PRECISIONS:
                a, b = timings.get(key(m, "litert", precision, t)), timings.get(key(m, "ort", precision, t))
                if a and b:
                    ratios[f"{m}/litert_over_ort-{precision}/t{t}"] = a.p50_ms / b.p50_ms
    return ratios


def table(
    timings: Mapping[str, Timing], ratios: Mapping[str, float], models: Sequence[str], threads: Sequence[int]
) -> str:
    """One row per model and thread count: p50 of each trunk and the INT8 / FP32 ratios."""

    def ms(k: str) -> str:
        return f"{timings[k].p50_ms:>9.3f}" if k in timings else f"{'-':>9}"

    def ratio(k: str) -> str:
        return f"{ratios[k]:>9.3f}" if k in ratios else f"{'-':>9}"

    head = ["litert32", "litert8", "lite 8/32", "ort32", "ort8", "ort 8/32"]
    rows = [f"p50 (ms) and p50 ratios; target LiteRT INT8 / FP32 <= {TARGET}", f"{'model':<6} {'thr':>3} "
            + " ".join(f"{h:>9}" for h in head)]  # fmt: skip
    for m in models:
        for t in threads:
            cells = [
                ms(key(m, "litert", "fp32", t)), ms(key(m, "litert", "int8", t)),
                ratio(f"{m}/litert-int8_over_fp32/t{t}"),
                ms(key(m, "ort", "fp32", t)), ms(key(m, "ort", "int8", t)),
                ratio(f"{m}/ort-int8_over_fp32/t{t}"),
            ]  # fmt: skip
            rows.append(f"{m:<6} {t:>3} " + " ".join(cells))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS[::-1]), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts, every case at each")
    parser.add_argument("--seconds", type=float, default=20.0, help="timing budget per model")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--calib-frames", type=int, default=64, help="generated calibration frames (demo fallback, mbv2)"
    )
    parser.add_argument("--held-out", type=int, default=8, help="held-out frames for the cosine check")
    parser.add_argument("--min-agreement", type=float, default=0.99, help="the exporters' fidelity gate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "tflite_latency", help="converted bundles")
    parser.add_argument("--reconvert", action="store_true", help="split, quantize and convert again")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        threads = []
    if not models or set(models) - set(MODELS) or not threads or min(threads) < 1:
        parser.error(f"--models takes {', '.join(MODELS)}; --threads takes positive integers, e.g. 1,2")

    timings: dict[str, Timing] = {}
    results: dict[str, Any] = {}
    for model in models:
        paths = prepare_model(model, args)
        held = held_out_frames(paths["bundle"], paths["calib"], args.held_out)
        frame = held[:1]
        trunks = load_trunks(model, paths, threads, frame)
        reference = next(tr for tr in trunks if tr.runtime == "ort" and tr.precision == "fp32").outputs(held)
        cosine = {f"{tr.runtime}-{tr.precision}": cosine_min(reference, tr.outputs(held)) for tr in trunks}
        cases = {key(model, tr.runtime, tr.precision, tr.threads): tr.call for tr in trunks}
        logger.info("%s: timing %d cases interleaved for %.0f s", model, len(cases), args.seconds)
        timings.update(
            run_interleaved(
                cases, warmup=args.warmup, seconds=args.seconds, progress=progress(model, logger, every=5.0)
            )
        )
        litert = {f"{tr.precision}/t{tr.threads}": tr for tr in trunks if tr.runtime == "litert"}
        files = {f"{tr.runtime}-{tr.precision}": tr.path for tr in trunks}
        quantization = json.loads((paths["onnx_int8"] / "quantization.json").read_text())
        results[model] = {
            "calibration": paths["calib_note"],
            "held_out_frames": len(held),
            "gate": {
                "tflite": decisions(paths["tflite"], "tflite.json"),
                "onnx": decisions(paths["onnx_int8"], "quantization.json"),
            },
            "files": {
                name: {
                    "path": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
                    "bytes": path.stat().st_size,
                }
                for name, path in files.items()
            },
            "ort_int8_settings": quantization.get("int8_settings"),
            "cosine_min_vs_ort_fp32": cosine,
            "litert": {name: tr.notes for name, tr in litert.items()},
        }
        for name, tr in litert.items():
            n = tr.notes
            logger.info(
                "%s: LiteRT %s: %d DELEGATE node(s) among %d; whole graph delegated: %s; input %s %s",
                model, name, n["delegate_nodes"], n["nodes"], n["whole_graph_delegated"], n["input"]["dtype"],
                n["input"]["shape"],
            )  # fmt: skip
    ratios = ratios_of(timings, models, threads)
    xnnpack_log = [line for r in results.values() for n in r["litert"].values() for line in n["log"]]
    xnnpack = {
        "log_line_seen": any(XNNPACK_LOG in line for line in xnnpack_log),
        "log": sorted(set(xnnpack_log)),
        "whole_graph_delegated": all(
            n["whole_graph_delegated"] for r in results.values() for n in r["litert"].values()
        ),
    }
    print(format_timings(timings))
    print()
    print(table(timings, ratios, models, threads))
    print()
    for m in models:
        print(f"{m}: cosine min vs the ORT FP32 trunk: "
              + ", ".join(f"{k} {v:.4f}" for k, v in results[m]["cosine_min_vs_ort_fp32"].items()))  # fmt: skip
    print(f"XNNPACK: log line {'seen' if xnnpack['log_line_seen'] else 'NOT seen'} ({'; '.join(xnnpack['log'])});"
          f" every LiteRT trunk is one delegate partition: {xnnpack['whole_graph_delegated']}")  # fmt: skip
    verdicts = {k: v <= TARGET for k, v in ratios.items() if "/litert-int8_over_fp32/" in k}
    for k, ok in verdicts.items():
        print(f"{k}: {ratios[k]:.3f} {'<=' if ok else '>'} {TARGET}: {'met' if ok else 'NOT met'}")
    if args.json:
        meta = {
            "benchmark": "tflite_latency",
            "models": models,
            "thread_counts": threads,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "target": {"litert_int8_over_fp32_p50_max": TARGET, "met": verdicts},
            "timed_call": {
                "litert": "set_tensor + invoke + get_tensor (signature tensors; int8 input quantized before)",
                "ort": "InferenceSession.run([trunk output], {input: NCHW frame})",
            },
            "ort_session": {"graph_optimization_level": "ORT_ENABLE_ALL", "allow_spinning": "0"},
            "xnnpack": xnnpack,
            "versions": {p: package_version(p) for p in ("ai-edge-litert", "onnxruntime", "onnx", "numpy")},
            "converter": json.loads((args.work / models[0] / "tflite" / "tflite.json").read_text()).get("converter"),
            "environment": environment(max(threads)),
            "results": results,
        }
        print(f"wrote {write_report(args.json, timings, ratios, meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
