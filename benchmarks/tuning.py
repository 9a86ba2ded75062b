"""How good is ``edge-runtime tune``? Its choice against an exhaustive search, in one interleaved run.

``python benchmarks/tuning.py [--models demo,mbv2,zoo] [--bundle NAME=DIR]... [--seconds 20]
[--tune-seconds 6] [--out benchmarks/results]``

For each bundle:

1. ``tune`` it twice (:func:`edge_runtime.tuning.search.tune`, ``--tune-seconds`` of timing
   each), recording each tune's wall time and choice;
2. list every combination of the per-graph candidates the tune considered (each graph's
   backends, precisions that passed the gate and their self-test, trunk threads 1..cores) —
   the exhaustive search space of the greedy tune;
3. time every combination, both tuned choices and the FP32 ONNX Runtime baseline in ONE
   interleaved run (``edge_runtime.tuning.timing.interleave``: 10 ms of whole frames of each per
   round, on the bundle's self-test frames) for ``--seconds``; a tuned choice that is one of the
   combinations (or the baseline) is the same runner, timed once.

Reported per bundle (JSON + markdown): the exhaustive best and its p50, each tune's p50 as a
ratio to the best and to FP32 ONNX Runtime, the two tunes' ratio to each other, each tune's
duration, and the goals (tuned <= 1.03x the best; <= 1.02x FP32 ONNX Runtime; two tunes within
3 %; a tune <= 10 s). Goals are reported, never asserted. The best of many noisy p50s is biased
low (the winner's curse): the ratios to the best are conservative.

Bundles: ``demo`` (the demo model split, INT8 ONNX on generated frames, converted to TFLite
FP32 + INT8: ONNX Runtime and LiteRT candidates together, cached in ``build/tuning/demo``);
``mbv2`` (the MobileNetV2-sized model of ``benchmarks/mobilenet_multitask.py``, INT8 ONNX;
``build/tuning/mbv2``); ``zoo`` (each model ``make zoo`` left in ``build/zoo``: its INT8 bundle,
ONNX FP32 + INT8, and its TFLite bundle, ONNX FP32 + LiteRT FP32/INT8 — the zoo's INT8 bundles
keep every INT8 graph whatever its agreement, so a tune there is about speed only).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench_support import DEMO_MODEL, MBV2_MODEL, ROOT, split_for_bench

from edge_runtime.bundle.reader import load_bundle
from edge_runtime.ops.bench import environment
from edge_runtime.tuning.configs import GraphConfig
from edge_runtime.tuning.search import TuneOptions, candidates, describe_assignment, tune, tune_frames
from edge_runtime.tuning.timing import GraphBench, interleave

logger = logging.getLogger("tuning")
WORK = ROOT / "build" / "tuning"
#: Combinations beyond this many are not timed (the report says so).
MAX_COMBINATIONS = 600
GOALS = {"vs_best": 1.03, "vs_fp32": 1.02, "tunes_apart": 0.03, "tune_seconds": 10.0}


def _demo_bundle() -> Path:
    """The demo split, INT8 ONNX added, converted to TFLite FP32 + INT8 (cached)."""
    from exporter.quantize import QuantizeOptions, quantize_bundle
    from exporter.tflite import TfliteOptions, convert_bundle

    work = WORK / "demo"
    final = work / "tflite"
    if (final / "manifest.json").is_file():
        return final
    split_for_bench(work / "bundle", DEMO_MODEL)
    quantize_bundle(work / "bundle", work / "int8", QuantizeOptions(calib="generated", precision="int8", force=True))
    convert_bundle(work / "int8", final, TfliteOptions(calib="generated", force=True))
    return final


def _mbv2_bundle() -> Path:
    """The MobileNetV2-sized model split with INT8 ONNX added (cached; the model is built first)."""
    from exporter.quantize import QuantizeOptions, quantize_bundle

    work = WORK / "mbv2"
    final = work / "int8"
    if (final / "manifest.json").is_file():
        return final
    if not MBV2_MODEL.is_file():
        import subprocess

        script = Path(__file__).with_name("mobilenet_multitask.py")
        subprocess.run([sys.executable, str(script), "-o", str(MBV2_MODEL)], check=True)
    split_for_bench(work / "bundle", MBV2_MODEL)
    # random weights: the gate's agreement means nothing here, only speed is measured
    options = QuantizeOptions(calib="generated", precision="int8", min_agreement=0.01, force=True)
    quantize_bundle(work / "bundle", final, options)
    return final


def _zoo_bundles() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for model in sorted(p for p in (ROOT / "build" / "zoo").iterdir() if p.is_dir()):
        for kind in ("int8", "tflite"):
            bundle = model / f"bundle-{kind}"
            if (bundle / "manifest.json").is_file():
                found[f"{model.name} ({kind})"] = bundle
    return found


def _key(assignment: dict[str, GraphConfig]) -> tuple[tuple[str, GraphConfig], ...]:
    return tuple(sorted(assignment.items()))


def _combinations(found: dict[str, list[GraphConfig]]) -> list[dict[str, GraphConfig]]:
    graphs = list(found)
    return [dict(zip(graphs, combo, strict=True)) for combo in itertools.product(*(found[g] for g in graphs))]


def measure(name: str, path: Path, seconds: float, tune_seconds: float) -> dict[str, Any]:
    """Two tunes of ``path`` and the exhaustive interleaved run (see the module docstring)."""
    bundle = load_bundle(path, verify_hashes=False)
    tunes = []
    for i in range(2):
        started = time.monotonic()
        result = tune(bundle, TuneOptions(seconds=tune_seconds))
        tunes.append((result, time.monotonic() - started))
        logger.info("%s: tune %d in %.1f s: %s", name, i + 1, tunes[-1][1], describe_assignment(result.choice))
    found, dropped = candidates(bundle, TuneOptions())
    baseline = tunes[0][0].baseline
    for graph, configs in found.items():
        if baseline[graph] not in configs:
            configs.insert(0, baseline[graph])
    combos = _combinations(found)
    capped = len(combos) > MAX_COMBINATIONS
    combos = combos[:MAX_COMBINATIONS]
    runners_of = {describe_assignment(c): c for c in combos}
    named = {"baseline": baseline, "tune 1": tunes[0][0].choice, "tune 2": tunes[1][0].choice}
    # One runner per distinct configuration: a tune that chose a combination (or the baseline) is
    # timed as that combination, not twice (twice would only measure the noise between the two).
    distinct = {_key(c): c for c in [*named.values(), *runners_of.values()]}
    with GraphBench(bundle) as bench:
        runners = {key: bench.frame_runner(c) for key, c in distinct.items()}
        logger.info("%s: %d configurations (%d combinations, 2 tunes, baseline), interleaved for %.0f s",
                    name, len(runners), len(combos), seconds)  # fmt: skip
        by_key = interleave(runners, tune_frames(bundle), seconds=seconds)
    timings = {label: by_key[_key(c)] for label, c in {**named, **runners_of}.items()}
    exhaustive = {k: t for k, t in timings.items() if k in runners_of}
    best = min(exhaustive, key=lambda k: exhaustive[k].p50_ms)
    base = timings["baseline"].p50_ms
    row: dict[str, Any] = {
        "bundle": name,
        "path": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
        "combinations": len(combos),
        "capped": capped,
        "dropped": dropped,
        "runs_each": min(t.runs for t in timings.values()),
        "fp32_onnxruntime_p50_ms": round(base, 4),
        "best": best,
        "best_p50_ms": round(exhaustive[best].p50_ms, 4),
        "best_vs_fp32": round(exhaustive[best].p50_ms / base, 4),
    }
    for i, (result, wall) in enumerate(tunes, 1):
        p50 = timings[f"tune {i}"].p50_ms
        row[f"tune{i}"] = {
            "choice": describe_assignment(result.choice),
            "seconds": round(wall, 2),
            "p50_ms": round(p50, 4),
            "vs_best": round(p50 / exhaustive[best].p50_ms, 4),
            "vs_fp32": round(p50 / base, 4),
        }
    row["tunes_apart"] = round(abs(timings["tune 1"].p50_ms / timings["tune 2"].p50_ms - 1), 4)
    row["goals"] = {
        "vs_best": all(row[f"tune{i}"]["vs_best"] <= GOALS["vs_best"] for i in (1, 2)),
        "vs_fp32": all(row[f"tune{i}"]["vs_fp32"] <= GOALS["vs_fp32"] for i in (1, 2)),
        "tunes_apart": row["tunes_apart"] <= GOALS["tunes_apart"],
        "tune_seconds": all(row[f"tune{i}"]["seconds"] <= GOALS["tune_seconds"] for i in (1, 2)),
    }
    return row


def _markdown(rows: list[dict[str, Any]], env: dict[str, Any], args: argparse.Namespace) -> str:
    head = (
        "| bundle | combinations | FP32 ORT p50 ms | exhaustive best (p50 ms, vs FP32) | tune 1: choice | "
        "tune 1 vs best / vs FP32 | tune 2 vs best / vs FP32 | tunes apart | tune s | goals |\n"
        "| --- | ---: | ---: | --- | --- | --- | --- | ---: | --- | --- |\n"
    )
    lines = []
    for r in rows:
        t1, t2 = r["tune1"], r["tune2"]
        failed = [k for k, ok in r["goals"].items() if not ok]
        lines.append(
            f"| {r['bundle']} | {r['combinations']}{' (capped)' if r['capped'] else ''} | "
            f"{r['fp32_onnxruntime_p50_ms']:.3f} | {r['best']} ({r['best_p50_ms']:.3f}, {r['best_vs_fp32']:.2f}x) | "
            f"{t1['choice']} | {t1['vs_best']:.3f} / {t1['vs_fp32']:.3f} | {t2['vs_best']:.3f} / {t2['vs_fp32']:.3f} | "
            f"{r['tunes_apart'] * 100:.1f} % | {t1['seconds']:.1f}, {t2['seconds']:.1f} | "
            f"{'met' if not failed else 'missed: ' + ', '.join(failed)} |"
        )
    return (
        f"# `edge-runtime tune` against an exhaustive search ({env.get('machine', '?')})\n\n"
        "Per bundle: two tunes (`--tune-seconds` "
        f"{args.tune_seconds:g} s of timing each), then every combination of the per-graph candidates, both "
        f"tuned choices and FP32 ONNX Runtime in one interleaved run of {args.seconds:g} s (whole frames on the "
        "bundle's self-test frames). Goals: tuned <= 1.03x the exhaustive best, <= 1.02x FP32 ONNX Runtime, two "
        "tunes within 3 %, a tune <= 10 s. The best of many noisy p50s is biased low. Command: "
        f"`python benchmarks/tuning.py --seconds {args.seconds:g} --tune-seconds {args.tune_seconds:g}`.\n\n"
        f"Machine: {env.get('cpu', '?')}, {os.cpu_count()} cores, onnxruntime {env.get('onnxruntime', '?')}.\n\n"
        + head
        + "\n".join(lines)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,mbv2,zoo", help="demo, mbv2, zoo (comma-separated), or none")
    parser.add_argument("--bundle", action="append", default=[], metavar="NAME=DIR", help="also this bundle")
    parser.add_argument("--seconds", type=float, default=20.0, help="the exhaustive interleaved run per bundle")
    parser.add_argument("--tune-seconds", type=float, default=6.0, help="each tune's timing")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("edge_runtime").setLevel(logging.WARNING)
    logging.getLogger("exporter").setLevel(logging.WARNING)
    wanted = args.models.split(",")
    bundles: dict[str, Path] = {}
    if "demo" in wanted:
        bundles["demo (onnx + tflite)"] = _demo_bundle()
    if "mbv2" in wanted:
        bundles["mbv2 (onnx)"] = _mbv2_bundle()
    if "zoo" in wanted:
        bundles.update(_zoo_bundles())
    for item in args.bundle:
        name, _, folder = item.partition("=")
        if not folder or not (Path(folder) / "manifest.json").is_file():
            parser.error(f"--bundle {item!r}: give NAME=DIR, DIR a bundle directory")
        bundles[name] = Path(folder).resolve()
    rows = [measure(name, path, args.seconds, args.tune_seconds) for name, path in bundles.items()]
    env = environment()
    arch = env.get("machine", "unknown")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"tuning.{arch}.json").write_text(
        json.dumps({"environment": env, "goals": GOALS, "bundles": rows}, indent=2) + "\n"
    )
    (args.out / f"tuning.{arch}.md").write_text(_markdown(rows, env, args))
    print((args.out / f"tuning.{arch}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
