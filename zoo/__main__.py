"""``python -m zoo [--models a,b] [--out build/zoo] [--quick] [--no-tflite]``: run the model zoo (``make zoo``).

For each model (:mod:`zoo.catalog`): a fresh ``OUT/<model>/`` with its images, oracle output,
bundles, published results and ``report.json``; then ``OUT/index.json`` (every report, with paths)
and the table ``zoo.<arch>.md`` / ``.json`` (``--results``: ``benchmarks/results`` by default; in
quick mode ``OUT``). Progress goes to stderr as it runs; a model that cannot run (no network to
PyPI, a checksum, a failed step) gets a one-line error and a report that says so, and the others
still run. TFLite (convert, the daemon on LiteRT, LiteRT latency) is part of a full run and left out
of quick runs and with ``--no-tflite`` (``--tflite`` forces it in a quick run). Exit status: 0 when
every check of every model passed, 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import shutil
import sys
import time
from pathlib import Path

from zoo.catalog import MODELS, Skipped, parse_models, prepare, runner
from zoo.fetch import ZooError
from zoo.report import Agreement, ModelReport, ZooContext
from zoo.table import write_index, write_json, write_table

logger = logging.getLogger("zoo")
ROOT = Path(__file__).resolve().parent.parent


def default_cache() -> Path:
    """``$EDGE_EXPORT_CACHE/zoo`` or ``~/.cache/edge-runtime/zoo`` (downloads; the oracle virtualenvs
    live beside the converters' in the parent folder)."""
    from exporter.toolenv import cache_dir

    return cache_dir() / "zoo"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m zoo",
        description="Run published models end to end and compare them with their packages' own inference code.",
    )
    parser.add_argument("--models", help=f"comma-separated subset (default: all: {', '.join(MODELS)})")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "zoo", help="work folder (default: build/zoo)")
    parser.add_argument("--quick", action="store_true", help="fewer images, shorter timing (the smoke test)")
    parser.add_argument(
        "--results", type=Path, help="where zoo.<arch>.md/.json go (default: benchmarks/results; quick: OUT)"
    )
    parser.add_argument(
        "--tflite",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="convert to TFLite and run the daemon on LiteRT too (default: yes, except with --quick)",
    )
    parser.add_argument("--cache", type=Path, help="download cache (default: ~/.cache/edge-runtime/zoo)")
    return parser.parse_args(argv)


def wants_tflite(args: argparse.Namespace) -> bool:
    """``--tflite`` / ``--no-tflite`` when given, else yes except in quick runs (the smoke test keeps its cost)."""
    return (not args.quick) if args.tflite is None else bool(args.tflite)


def failed_report(name: str, error: str) -> ModelReport:
    """The report of a model whose run stopped: nothing measured, ``completed`` False."""
    return ModelReport(
        model=name,
        package="?",
        layout="?",
        images=0,
        split_max_error=math.nan,
        fp32=Agreement(0, 0, 0),
        checks={"completed": False},
        error=error,
    )


def run_one(name: str, ctx: ZooContext) -> ModelReport:
    """Run model ``name``; any failure becomes a report with ``error`` (and is logged on one line)."""
    started = time.monotonic()
    try:
        run = runner(name)
        prepare(name, ctx)
        report = run(ctx)
    except Skipped:
        raise
    except (ZooError, OSError, ValueError) as exc:
        logger.error("[%s] error: %s", name, exc)
        report = failed_report(name, str(exc))
    except Exception as exc:  # a bug in a model's procedure must not stop the others
        logger.exception("[%s] error: %s", name, exc)
        report = failed_report(name, f"{type(exc).__name__}: {exc}")
    write_json(ctx.work / "report.json", report.to_dict())
    failed = [check for check, ok in report.checks.items() if not ok]
    verdict = "passed" if report.passed else f"FAILED {', '.join(failed)}"
    logger.info("[%s] %s in %.0f s", name, verdict, time.monotonic() - started)
    return report


def main(argv: list[str] | None = None) -> int:
    """The CLI (see the module docstring)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("edge_runtime", "exporter.pipeline"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The latency step loads the bundles the zoo just wrote: unsigned, as split leaves them.
    logging.getLogger("edge_runtime.bundle.reader").setLevel(logging.ERROR)
    try:
        names = parse_models(args.models)
    except ValueError as exc:
        print(f"python -m zoo: error: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out.resolve()
    cache: Path = (args.cache or default_cache()).resolve()
    results: Path = (args.results or (out if args.quick else ROOT / "benchmarks" / "results")).resolve()
    tflite = wants_tflite(args)
    started = time.monotonic()
    reports: list[ModelReport] = []
    skipped: dict[str, str] = {}
    work: dict[str, Path] = {}
    for name in names:
        ctx = ZooContext(work=out / name, cache=cache, python=sys.executable, quick=args.quick, tflite=tflite)
        logger.info("[%s] starting (%s)", name, ctx.work)
        shutil.rmtree(ctx.work, ignore_errors=True)
        ctx.work.mkdir(parents=True)
        try:
            reports.append(run_one(name, ctx))
        except Skipped as why:
            logger.info("[%s] skipped: %s", name, why)
            skipped[name] = str(why)
            shutil.rmtree(ctx.work, ignore_errors=True)
            continue
        work[name] = ctx.work
    from edge_runtime.ops.bench import environment

    command = "python -m zoo" + (f" --models {args.models}" if args.models else "") + (" --quick" if args.quick else "")
    if args.tflite is not None and args.tflite == args.quick:
        command += " --tflite" if args.tflite else " --no-tflite"
    meta = {
        "arch": platform.machine(),
        "quick": args.quick,
        "tflite": tflite,
        "command": "make zoo" if command == "python -m zoo" else command,
        "seconds": round(time.monotonic() - started, 1),
        "environment": environment(),
    }
    index = write_index(out / "index.json", reports, work)
    paths = write_table(reports, skipped, results, platform.machine(), meta)
    logger.info("wrote %s, %s", index, ", ".join(str(p) for p in paths))
    failed = [r.model for r in reports if not r.passed]
    for report in reports:
        if report.error:
            logger.info("%-14s stopped: %s", report.model, report.error)
            continue
        a, b = report.fp32, report.int8
        int8 = f"{b.matched}/{b.oracle} ({b.fraction:.1%})" if b is not None else "-"
        t = report.tflite_int8
        int8 += f"  TFLite INT8 {t.matched}/{t.oracle} ({t.fraction:.1%})" if t is not None else ""
        failed_checks = ", ".join(c for c, ok in report.checks.items() if not ok)
        verdict = "pass" if report.passed else f"FAIL: {failed_checks}"
        logger.info(
            "%-14s FP32 %d/%d (%d extra)  INT8 %s  %s", report.model, a.matched, a.oracle, a.extra, int8, verdict
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
