"""Every comparison of issue 8 in ONE interleaved run, each reported as a p50 ratio.

``python benchmarks/compare.py MODEL_OR_BUNDLE [--model ORIGINAL.onnx] [--seconds S] [--json OUT]
[--out DIR [--name NAME]] [--skip int8,fp16,litert,threads,single_task,monolithic]``

Builds what it needs under ``--work`` (default: ``build/tflite_latency/demo`` for the demo model,
``build/tflite_latency/mbv2`` for ``build/mbv2_multitask.onnx`` -- the cache
``benchmarks/tflite_latency.py`` fills -- else ``build/compare/<name>``), reusing what is there:

* ``bundle/``      the split bundle (``bench_support.split_for_bench``), unless a bundle is given;
* ``onnx_int8/``   ``exporter.quantize.quantize_bundle`` (INT8 QDQ, fidelity gate);
* ``onnx_fp16/``   ``quantize_bundle`` with ``precision="fp16"``;
* ``tflite/``      ``exporter.tflite.convert_bundle`` (LiteRT FP32 + INT8), only when LiteRT
  (``ai_edge_litert``) is installed;
* K single-task models: for each head, the bundle's FP32 trunk and that head merged into ONE
  ONNX graph with ``onnx.compose.merge_models`` (a true independent single-task model, one
  session each, run in turn).

Cases (all on the same preprocessed input, ``Engine.run_graphs`` unless said otherwise; trunk
``--threads`` intra-op threads, heads 1):

``split`` (engine, all heads, FP32, ONNX Runtime), ``monolithic`` (the original model, one session;
needs the model), ``single_task`` (K merged models in turn), ``trunk`` and ``heads`` (for the
ideal), ``int8``, ``fp16``, ``litert_fp32``, ``litert_int8``, ``threads_1/2/4``, ``infer_all``
and ``infer_scheduled`` (``Engine.infer`` on a 640x480 frame with every head every frame vs the
bundle's schedules; when those run every head every frame, heads after the first run every 2nd
frame and the report says so).

Ratios: split/monolithic (goal <= 1.03), single_task/split against the ideal
(K x monolithic)/(trunk + heads) (goal >= 0.9 of it), int8/fp32, fp16/fp32, litert/ort (FP32 and
INT8), threads 2/1 and 4/1, scheduled/all. Goals are reported, never asserted; they apply
to a MobileNetV2-sized trunk (>= 2 ms), the tiny demo is reported too.

A LiteRT INT8 ratio compares INT8 graphs only: when the gate kept some head float, both sides
run the trunk and the heads that are INT8 on both (cases ``litert_int8@int8``, ``int8@int8``...);
when the trunk is not INT8, or a LiteRT FP32 graph runs on ONNX Runtime, the ratio is reported
missing with the reason (``missing_ratios`` in the JSON, a row in the table).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from bench_support import DEMO_MODEL, MBV2_MODEL, ROOT, engine_all_heads, package_version, split_for_bench

from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.ops.bench import Timing, environment, format_timings, run_interleaved, write_csv, write_report

logger = logging.getLogger("compare")

GOAL_SPLIT = 1.03
GOAL_SHARED = 0.9
SKIPPABLE = ("int8", "fp16", "litert", "threads", "single_task", "monolithic")


def _session(model: onnx.ModelProto | Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    data = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def default_work(model: Path | None, name: str) -> Path:
    if model is not None and model.resolve() == DEMO_MODEL.resolve():
        return ROOT / "build" / "tflite_latency" / "demo"
    if model is not None and model.resolve() == MBV2_MODEL.resolve():
        return ROOT / "build" / "tflite_latency" / "mbv2"
    return ROOT / "build" / "compare" / name


def calibration(work: Path, model: Path | None) -> Path | None:
    """The frames ``tflite_latency.py`` uses: the demo's PNGs, the MobileNetV2's normal array."""
    if model is not None and model.resolve() == DEMO_MODEL.resolve() and (ROOT / "build" / "demo_calib").is_dir():
        return ROOT / "build" / "demo_calib"
    normal = work / "normal_calib.npy"
    return normal if normal.exists() else None


def single_task_models(bundle: Path, engine: Engine) -> dict[str, onnx.ModelProto]:
    """For each head: the FP32 trunk and the head merged into one graph."""
    manifest = engine.manifest
    trunk = onnx.load(str(bundle / engine.artifacts["trunk"].path))
    # a head may read the model input as well: the trunk passes it through as an extra output
    trunk.graph.output.extend([v for v in trunk.graph.input if v.name == manifest.input.name])
    passthrough = (*manifest.trunk.outputs, manifest.input.name)
    models = {}
    for name in engine.head_names:
        head = onnx.load(str(bundle / engine.artifacts[name].path))
        head_inputs = [i.name for i in head.graph.input]
        head = onnx.compose.add_prefix(head, f"{name}__")  # the graphs share internal edge names
        io_map = [(i, f"{name}__{i}") for i in head_inputs if i in passthrough]
        merged = onnx.compose.merge_models(trunk, head, io_map=io_map, outputs=[o.name for o in head.graph.output])
        models[name] = merged
    return models


def int8_subset_cases(
    engines: dict[str, Engine], sides: tuple[tuple[str, str], tuple[str, str | None]], x: np.ndarray
) -> tuple[dict[str, Callable[[], Any]], str | None]:
    """The two cases of an INT8 ratio, ``{case: run}`` (numerator first), over the graphs that
    are INT8 on the INT8 side(s): the whole engines when every graph is, else ``<case>@int8``
    cases on the trunk and those heads; ``(.., reason)`` when the trunk is not INT8."""
    (a, a_format), (b, b_format) = sides
    for case in (a, b):
        if case not in engines:
            return {}, f"no {case} case"

    def at_int8(case: str, fmt: str) -> set[str]:
        return {g for g, art in engines[case].artifacts.items() if art.format == fmt and art.precision == "int8"}

    graphs = at_int8(a, a_format) & (at_int8(b, b_format) if b_format else set(engines[b].artifacts))
    if "trunk" not in graphs:
        ran = ", ".join(f"{g} {art.format} {art.precision}" for g, art in engines[a].artifacts.items())
        return {}, f"the trunk is not INT8 on both sides ({a}: {ran})"
    every = set(engines[a].artifacts) == graphs and (not b_format or set(engines[b].artifacts) == graphs)
    if every:
        return {a: lambda: engines[a].run_graphs(x), b: lambda: engines[b].run_graphs(x)}, None
    heads = [h for h in engines[a].head_names if h in graphs]
    return {
        f"{a}@int8": lambda: engines[a].run_graphs(x, heads),
        f"{b}@int8": lambda: engines[b].run_graphs(x, heads),
    }, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="an ONNX model to split, or a bundle directory")
    parser.add_argument("--model", type=Path, help="the original model when SOURCE is a bundle (for monolithic)")
    parser.add_argument("--work", type=Path, help="where converted bundles are kept and reused")
    parser.add_argument("--threads", type=int, default=2, help="trunk threads of every case but threads_N")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write the JSON report here (edge-bench/1)")
    parser.add_argument("--out", type=Path, help="write NAME.json, NAME.csv, NAME.md and PNG charts here")
    parser.add_argument("--name", default="compare", help="file name stem under --out (default: compare)")
    parser.add_argument(
        "--skip", default="", metavar="GROUPS",
        help=f"comma-separated groups not to build or time: {', '.join(SKIPPABLE)}",
    )  # fmt: skip
    args = parser.parse_args(argv)
    skip = {g.strip() for g in args.skip.split(",") if g.strip()}
    unknown = skip - set(SKIPPABLE)
    if unknown:
        parser.error(f"--skip: unknown group(s) {', '.join(sorted(unknown))}; groups: {', '.join(SKIPPABLE)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("exporter", "edge_runtime"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    is_bundle = args.source.is_dir()
    model = args.model if is_bundle else args.source
    work = args.work or default_work(model, args.source.stem)
    missing: list[str] = []
    missing_ratios: dict[str, str] = {}

    if is_bundle:
        bundle = args.source
    else:
        bundle = work / "bundle"
        if not (bundle / "manifest.json").exists():
            logger.info("splitting %s -> %s", model, bundle)
            split_for_bench(bundle, model)
    calib = calibration(work, model)

    from exporter.quantize import quantize_bundle
    from exporter.quantize_options import QuantizeOptions

    variants: dict[str, Path] = {}
    for precision in ("int8", "fp16"):
        if precision in skip:
            continue
        out = work / f"onnx_{precision}"
        if not (out / "manifest.json").exists():
            logger.info("quantize_bundle %s -> %s", precision, out)
            try:
                quantize_bundle(bundle, out, QuantizeOptions(calib=calib, precision=precision, force=True))
            except Exception as exc:
                missing.append(f"{precision}: quantize_bundle failed: {exc}")
                continue
        variants[precision] = out
    if "litert" in skip:
        pass
    elif package_version("ai-edge-litert") is None:
        missing.append("litert: ai-edge-litert is not installed")
    else:
        out = work / "tflite"
        if not (out / "manifest.json").exists():
            from exporter.tflite import TfliteOptions, convert_bundle

            logger.info("convert_bundle -> %s (onnx2tf in its own venv)", out)
            try:
                convert_bundle(bundle, out, TfliteOptions(calib=calib, force=True))
            except Exception as exc:
                missing.append(f"litert: convert_bundle failed: {exc}")
        if (out / "manifest.json").exists():
            variants["tflite"] = out

    logger.info("loading engines")
    engines: dict[str, Engine] = {}
    engines["split"] = engine_all_heads(bundle, args.threads)
    split = engines["split"]
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    x = split.preprocess(frame)
    input_name = split.manifest.input.name
    notes: dict[str, Any] = {"cores": os.cpu_count()}

    def load(name: str, path: Path, **options: Any) -> None:
        try:
            engine = Engine.from_bundle(path, EngineOptions(**options))
            for head in engine.head_names:
                engine.scheduler.set_every_n_frames(head, 1)
            engines[name] = engine
            notes[f"{name}_artifacts"] = {g: f"{a.format} {a.precision}" for g, a in engine.artifacts.items()}
        except Exception as exc:
            missing.append(f"{name}: {exc}")

    for precision in ("int8", "fp16"):
        if precision in variants:
            load(precision, variants[precision], precision=precision, threads=args.threads)
    if "tflite" in variants:
        for precision in ("fp32", "int8"):
            load(f"litert_{precision}", variants["tflite"], backend="tflite", precision=precision, threads=args.threads)
    for n in () if "threads" in skip else (1, 2, 4):
        load(f"threads_{n}", bundle, threads=n)
    if "threads_4" in engines and (os.cpu_count() or 0) < 4:
        notes["threads_4"] = f"4 threads on a {os.cpu_count()}-core machine: oversubscribed"

    scheduled = Engine.from_bundle(bundle, EngineOptions(threads=args.threads))
    schedule = {h: scheduled.manifest.heads[h].schedule for h in scheduled.head_names}
    if all(getattr(s, "every_n_frames", 1) == 1 for s in schedule.values()):
        for head in scheduled.head_names[1:]:
            scheduled.scheduler.set_every_n_frames(head, 2)
        notes["scheduled"] = "bundle runs every head every frame; heads after the first set to every 2nd frame"
    else:
        notes["scheduled"] = f"bundle schedules: {schedule}"
    engines["infer_scheduled"] = scheduled

    cases: dict[str, Callable[[], Any]] = {}
    cases["split"] = lambda: split.run_graphs(x)
    if "monolithic" in skip:
        pass
    elif model is not None and model.exists():
        monolithic = _session(model, args.threads)
        cases["monolithic"] = lambda: monolithic.run(None, {input_name: x})
    else:
        missing.append("monolithic: no original model (pass --model)")
    try:
        if "single_task" in skip:
            raise LookupError("skipped")
        merged = single_task_models(bundle, split)
        sessions = [_session(m, args.threads) for m in merged.values()]
        notes["single_task"] = (
            "onnx.compose.merge_models(trunk.fp32, add_prefix(head.fp32)): one graph and session per task"
        )
        cases["single_task"] = lambda: [s.run(None, {input_name: x}) for s in sessions]
    except LookupError:
        pass
    except Exception as exc:
        missing.append(f"single_task: {exc}")
    trunk_outputs = split.manifest.trunk.outputs
    cases["trunk"] = lambda: split._trunk.run({input_name: x}, trunk_outputs)
    features = split._trunk.run({input_name: x}, trunk_outputs)
    feeds = {n: {i: features.get(i, x) for i in split._heads[n].inputs} for n in split.head_names}

    def run_heads() -> None:
        for n in split.head_names:
            split._heads[n].session.run(feeds[n], split._heads[n].outputs)

    cases["heads"] = run_heads
    for name, engine in engines.items():
        if name not in ("split", "infer_scheduled"):
            cases[name] = functools.partial(engine.run_graphs, x)
    # INT8 ratios compare INT8 graphs only: over the graphs every side runs at INT8 (subset cases)
    int8_pairs = {
        "litert_int8_over_litert_fp32": (("litert_int8", "tflite"), ("litert_fp32", None)),
        "litert_int8_over_ort_int8": (("litert_int8", "tflite"), ("int8", "onnx")),
    }
    int8_ratios: dict[str, tuple[str, str]] = {}
    if "litert_fp32" in engines:
        ran = engines["litert_fp32"].artifacts.items()
        off = {g: f"{a.format} {a.precision}" for g, a in ran if a.format != "tflite"}
        if off:
            missing_ratios["litert_fp32_over_ort_fp32"] = f"graphs not on LiteRT: {off}"
    for ratio_name, sides in int8_pairs.items():
        cases_pair, why = int8_subset_cases(engines, sides, x)
        if why is not None:
            missing_ratios[ratio_name] = why
            continue
        for case, run in cases_pair.items():
            cases.setdefault(case, run)
        a, b = cases_pair
        int8_ratios[ratio_name] = (a, b)
        if a != sides[0][0]:
            notes[ratio_name] = f"over the graphs at INT8 on both sides only: {a}, {b}"
    cases["infer_all"] = lambda: split.infer(frame)
    cases["infer_scheduled"] = lambda: scheduled.infer(frame)

    logger.info("timing %d cases interleaved for %.0f s: %s", len(cases), args.seconds, ", ".join(cases))
    timings = run_interleaved(
        cases, warmup=args.warmup, seconds=args.seconds,
        progress=lambda rounds, elapsed: logger.info("  %d rounds, %.0f s", rounds, elapsed),
    )  # fmt: skip
    for engine in engines.values():
        engine.close()

    p50 = {name: t.p50_ms for name, t in timings.items()}
    k = len(split.head_names)
    ratios: dict[str, float] = {}

    def ratio(name: str, a: str, b: str) -> None:
        if name in missing_ratios:
            return
        if a in p50 and b in p50:
            ratios[name] = p50[a] / p50[b]
        else:
            absent = [case for case in (a, b) if case not in p50]
            missing_ratios[name] = f"no {' or '.join(absent)} case" + (
                f" ({'; '.join(m for m in missing if m.split(':')[0] in {*absent, 'litert'})})"
                if any(m.split(":")[0] in {*absent, "litert"} for m in missing)
                else ""
            )

    ratio("split_over_monolithic", "split", "monolithic")
    ratio("single_task_over_split", "single_task", "split")
    if "monolithic" in p50:
        ratios["ideal_shared_trunk_speedup"] = k * p50["monolithic"] / (p50["trunk"] + p50["heads"])
        if "single_task_over_split" in ratios:
            ratios["speedup_fraction_of_ideal"] = (
                ratios["single_task_over_split"] / ratios["ideal_shared_trunk_speedup"]
            )
    ratio("int8_over_fp32", "int8", "split")
    ratio("fp16_over_fp32", "fp16", "split")
    ratio("litert_fp32_over_ort_fp32", "litert_fp32", "split")
    for ratio_name in int8_pairs:
        ratio(ratio_name, *int8_ratios.get(ratio_name, ("litert_int8", "")))
    ratio("threads_2_over_1", "threads_2", "threads_1")
    ratio("threads_4_over_1", "threads_4", "threads_1")
    ratio("scheduled_over_all", "infer_scheduled", "infer_all")

    goals = {}
    if "split_over_monolithic" in ratios:
        goals["split_over_monolithic<=1.03"] = ratios["split_over_monolithic"] <= GOAL_SPLIT
    if "speedup_fraction_of_ideal" in ratios:
        goals["speedup_fraction_of_ideal>=0.9"] = ratios["speedup_fraction_of_ideal"] >= GOAL_SHARED

    print(format_timings(timings))
    print()
    for name, value in ratios.items():
        print(f"{name:<32} {value:.3f}")
    for name, met in goals.items():
        print(f"goal {name:<40} {'met' if met else 'NOT met'}")
    for line in missing:
        print(f"missing: {line}")
    for name, why in missing_ratios.items():
        print(f"missing ratio {name}: {why}")
    for key, value in notes.items():
        print(f"note {key}: {value}")
    if args.json or args.out:
        meta = {
            "benchmark": "compare",
            "source": str(args.source),
            "model": str(model) if model is not None else None,
            "seconds": args.seconds,
            "heads": list(split.head_names),
            "goals_met": goals,
            "missing": missing,
            "missing_ratios": missing_ratios,
            "notes": notes,
            "environment": environment(args.threads),
        }
        meta["skipped"] = sorted(skip)
        if args.json:
            print(f"wrote {write_report(args.json, timings, ratios, meta)}")
        if args.out:
            for path in write_outputs(args.out, args.name, timings, ratios, goals, meta):
                print(f"wrote {path}")
    return 0


def write_outputs(
    out: Path, name: str, timings: dict[str, Timing], ratios: dict[str, float], goals: dict[str, bool],
    meta: dict[str, Any],
) -> list[Path]:  # fmt: skip
    """NAME.json, NAME.csv (per case), NAME.md (ratios and goals) and, with matplotlib, NAME.ratios.png
    and NAME.p50.png."""
    out.mkdir(parents=True, exist_ok=True)
    charts = _charts(out, name, timings, ratios)
    meta = {**meta, "charts": [c.name for c in charts]}
    paths = [write_report(out / f"{name}.json", timings, ratios, meta), write_csv(out / f"{name}.csv", timings)]
    env = meta["environment"]
    lines = [
        f"# Comparisons: {meta['source']}",
        "",
        f"- one interleaved run of {meta['seconds']:.0f} s; heads: {', '.join(meta['heads'])}",
        f"- machine: {env['cpu']} ({env['machine']}, {env['cores']} cores), Python {env['python']}, "
        f"onnxruntime {env['onnxruntime']}",
        "",
        "| ratio (p50) | value | goal |",
        "|---|---|---|",
    ]
    goal_of = {"split_over_monolithic": f"<= {GOAL_SPLIT}", "speedup_fraction_of_ideal": f">= {GOAL_SHARED}"}
    for key, value in ratios.items():
        goal = goal_of.get(key, "")
        met = [v for g, v in goals.items() if g.startswith(key)]
        if goal and met:
            goal += " (met)" if met[0] else " (**not met**)"
        lines.append(f"| {key} | {value:.3f} | {goal} |")
    for key, why in meta.get("missing_ratios", {}).items():
        lines.append(f"| {key} | missing: {why} |  |")
    lines += ["", "| case | n | p50 | p90 | p99 | mean (ms) |", "|---|---|---|---|---|---|"]
    for case, t in timings.items():
        lines.append(f"| {case} | {t.n} | {t.p50_ms:.3f} | {t.p90_ms:.3f} | {t.p99_ms:.3f} | {t.mean_ms:.3f} |")
    lines.append("")
    lines += [f"- missing: {line}" for line in meta["missing"]]
    lines += [f"- note {key}: {value}" for key, value in meta["notes"].items()]
    lines += ["", *(f"![{c.stem}]({c.name})" for c in charts)]
    md = out / f"{name}.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [*paths, md, *charts]


def _charts(out: Path, name: str, timings: dict[str, Timing], ratios: dict[str, float]) -> list[Path]:
    """A bar chart of the ratios and one of p50 per case; [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    for suffix, labels, values, xlabel in (
        ("ratios", list(ratios), list(ratios.values()), "ratio of p50 latencies"),
        ("p50", list(timings), [t.p50_ms for t in timings.values()], "p50 latency (ms)"),
    ):
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(labels) + 1.2))
        ax.barh(labels, values, color="tab:blue")
        if suffix == "ratios":
            ax.axvline(1.0, color="black", linewidth=0.8)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        ax.tick_params(labelsize=7)
        fig.tight_layout()
        path = out / f"{name}.{suffix}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


if __name__ == "__main__":
    sys.exit(main())
