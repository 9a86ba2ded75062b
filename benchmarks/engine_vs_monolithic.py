"""Split engine vs the original model vs independent single-task models, interleaved.

On one bundle (default: the demo), in ONE interleaved run:

* ``monolithic``   the original multi-output ONNX model in one ONNX Runtime session
* ``split``        trunk once + every head, through the engine's backend (no pre/post)
* ``independent``  one model per task (trunk + that head, cut from the original), run in turn
* ``trunk``        the trunk alone, and ``heads`` every head alone on fixed features
* ``engine``       ``Engine.infer`` on a 640x480 frame: preprocess + split + decode, all heads
* ``preprocessed`` ``Engine.infer``-equivalent minus preprocessing is not separable; the
  end-to-end ratio below is engine / split

Ratios reported (targets from the daemon issue, for a MobileNetV2-sized trunk):
split / monolithic (<= 1.03), engine / split (<= 1.10), and the shared-trunk speed-up
independent / split against its ideal (K x full) / (trunk + sum of heads).

Usage::

    python benchmarks/engine_vs_monolithic.py [--bundle DIR --model ORIGINAL.onnx]
        [--threads 2] [--seconds 20] [--json benchmarks/results/engine_vs_monolithic.x86_64.json]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from bench_support import EXAMPLES, ROOT, engine_all_heads, split_for_bench

from edge_runtime.bench import environment, format_timings, run_interleaved, write_report
from exporter.graph import GraphIndex
from exporter.split import extract_graph, tensor_types


def _session(model: onnx.ModelProto | str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="bundle directory (default: split the demo model)")
    parser.add_argument("--model", type=Path, default=EXAMPLES / "demo_multitask.onnx", help="the original model")
    parser.add_argument("--input-spec", type=Path, help="input spec for the split (default: the demo's for the demo)")
    parser.add_argument("--head-spec", type=Path, help="head spec for the split (default: the demo's for the demo)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or split_for_bench(Path(tmp) / "bundle", args.model, args.input_spec, args.head_spec)
        engine = engine_all_heads(bundle, args.threads)
        frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        x = engine.preprocess(frame)
        input_name = engine.manifest.input.name

        original = onnx.load(str(args.model))
        monolithic = _session(str(args.model), args.threads)
        index, types = GraphIndex(original), tensor_types(original)
        independent = [
            _session(extract_graph(original, index, index.model_inputs, [out], types, f"only_{out}"), args.threads)
            for out in index.outputs
        ]
        trunk_values = engine._trunk.run({input_name: x}, engine.manifest.trunk.outputs)
        head_feeds = {
            name: {i: (trunk_values.get(i, x)) for i in engine._heads[name].inputs} for name in engine.head_names
        }

        def run_heads() -> None:
            for name in engine.head_names:
                engine._heads[name].session.run(head_feeds[name], engine._heads[name].outputs)

        cases = {
            "monolithic": lambda: monolithic.run(None, {input_name: x}),
            "split": lambda: engine.run_graphs(x),
            "independent": lambda: [s.run(None, {input_name: x}) for s in independent],
            "trunk": lambda: engine._trunk.run({input_name: x}, engine.manifest.trunk.outputs),
            "heads": run_heads,
            "engine": lambda: engine.infer(frame),
        }
        timings = run_interleaved(
            cases, warmup=args.warmup, seconds=args.seconds,
            progress=lambda rounds, elapsed: logging.info("  %d rounds, %.0f s", rounds, elapsed),
        )  # fmt: skip
        engine.close()

    p50 = {name: t.p50_ms for name, t in timings.items()}
    k = len(independent)
    ratios = {
        "split_over_monolithic": p50["split"] / p50["monolithic"],
        "engine_over_split": p50["engine"] / p50["split"],
        "independent_over_split": p50["independent"] / p50["split"],
        "ideal_shared_trunk_speedup": k * p50["monolithic"] / (p50["trunk"] + p50["heads"]),
    }
    ratios["speedup_fraction_of_ideal"] = ratios["independent_over_split"] / ratios["ideal_shared_trunk_speedup"]
    print(format_timings(timings))
    print()
    for name, value in ratios.items():
        print(f"{name:<30} {value:.3f}")
    if args.json:
        meta = {
            "benchmark": "engine_vs_monolithic",
            "bundle": str(args.bundle or "demo (split on the fly)"),
            "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
            "seconds": args.seconds,
            "environment": environment(args.threads),
        }
        print(f"wrote {write_report(args.json, timings, ratios, meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
