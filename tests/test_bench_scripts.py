"""The comparison, memory and daemon-overhead scripts of ``benchmarks/`` in quick mode: they run
to the end on the demo model and write valid JSON, CSV, markdown and PNG. No timing assertions."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = ROOT / "examples" / "demo_multitask.onnx"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _script(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT / "benchmarks",
    )


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("compare-work")
    out = tmp_path_factory.mktemp("compare-out")
    proc = _script(
        "compare.py", str(DEMO_MODEL), "--work", str(work), "--seconds", "0.5", "--warmup", "2",
        "--skip", "litert,fp16,threads", "--out", str(out), "--name", "quick",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def test_compare_reports_every_ratio_it_can(compare_run: tuple[Path, str]) -> None:
    out, stdout = compare_run
    report = json.loads((out / "quick.json").read_text())
    assert report["schema"] == "edge-bench/1"
    assert report["skipped"] == ["fp16", "litert", "threads"]
    for ratio in ("split_over_monolithic", "single_task_over_split", "speedup_fraction_of_ideal", "int8_over_fp32"):
        assert report["ratios"][ratio] > 0, ratio
    assert "fp16_over_fp32" not in report["ratios"]
    assert set(report["goals_met"]) == {"split_over_monolithic<=1.03", "speedup_fraction_of_ideal>=0.9"}
    for case in ("split", "monolithic", "single_task", "trunk", "heads", "int8", "infer_all", "infer_scheduled"):
        assert report["timings_ms"][case]["n"] > 0, case
    assert "split_over_monolithic" in stdout


def test_compare_writes_csv_markdown_and_charts(compare_run: tuple[Path, str]) -> None:
    out, _ = compare_run
    rows = list(csv.reader((out / "quick.csv").open()))
    assert rows[0][:3] == ["case", "n", "mean_ms"]
    assert {r[0] for r in rows[1:]} >= {"split", "monolithic", "int8"}
    markdown = (out / "quick.md").read_text()
    assert "| split_over_monolithic |" in markdown and "<= 1.03" in markdown
    if not HAS_MATPLOTLIB:
        pytest.skip("matplotlib is not installed: no charts")
    for chart in ("quick.ratios.png", "quick.p50.png"):
        assert (out / chart).read_bytes()[:8] == PNG_MAGIC
        assert f"]({chart})" in markdown


def test_compare_rejects_an_unknown_skip_group(tmp_path: Path) -> None:
    proc = _script("compare.py", str(DEMO_MODEL), "--work", str(tmp_path), "--skip", "int9")
    assert proc.returncode == 2
    assert "unknown group(s) int9" in proc.stderr and "int8" in proc.stderr


def test_memory_measures_a_daemon_per_case(demo_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    proc = _script("memory.py", str(demo_bundle), "--frames", "3", "--cases", "onnxruntime:fp32", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    (case,) = report["cases"]
    assert case["exit_code"] == 0 and case["frames"] == 3
    # the daemon loaded the models on top of a process importing what it imported
    assert case["peak_rss_mib"] > report["baseline_import_mib"]["onnxruntime"] == case["baseline_import_mib"] > 0
    assert "onnxruntime" in case["imported"] and "edge_runtime" in case["imported"]
    assert case["artifacts"].startswith("trunk fp32")
    weights = sum(p.stat().st_size for p in demo_bundle.rglob("*.fp32.onnx")) / 2**20
    assert case["weights_mib"] == pytest.approx(weights, abs=0.01)
    assert case["goal_mib"] == pytest.approx(case["baseline_import_mib"] + 2 * weights + 30, abs=0.1)


def test_memory_reports_a_failed_case(demo_bundle: Path, tmp_path: Path) -> None:
    proc = _script("memory.py", str(demo_bundle), "--frames", "2", "--cases", "onnxruntime:int9")
    assert proc.returncode == 1
    assert "failed" in proc.stdout and "int9" in proc.stdout


def test_daemon_overhead_quick(demo_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    proc = _script(
        "daemon_overhead.py", "--models", "none", "--bundle", f"demo={demo_bundle}", "--frames", "20",
        "--rounds", "2", "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    demo = report["models"]["demo"]
    assert set(demo["ratios"]) >= {"daemon / raw", "engine / raw", "daemon / engine"}
    assert all(len(runs) == 2 and min(runs) > 0 for runs in demo["ms_per_frame"].values())
    assert demo["time_to_first_result_s"] > 0
    # the steady state leaves start-up out: the first result comes after the engine is built
    assert demo["time_to_first_result_s"] * 1000 > demo["median_ms_per_frame"]["daemon"]
    assert set(demo["goals_met"]) == {"daemon / engine", "engine / raw"}
    assert proc.stderr.count("medians so far: daemon / engine") == 2


def test_daemon_overhead_refuses_a_bad_bundle_argument(tmp_path: Path) -> None:
    proc = _script("daemon_overhead.py", "--models", "none", "--bundle", f"x={tmp_path}")
    assert proc.returncode == 2
    assert "expected NAME=DIR with DIR/manifest.json" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Usage"),
        (["Pi 5", "build/demo_bundle"], "BOARD must be lowercase"),
        (["pi-5", "no/such/bundle"], "not a bundle"),
    ],
)
def test_run_board_checks_its_arguments(args: list[str], message: str) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "run_board.sh"), *args], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert message in done.stdout + done.stderr


def test_run_board_is_shellcheck_clean() -> None:
    tool = shutil.which("shellcheck")
    if tool is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    done = subprocess.run([tool, str(ROOT / "benchmarks" / "run_board.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_tuning_benchmark_compares_tunes_with_every_combination(demo_int8_bundle: Path, tmp_path: Path) -> None:
    done = _script(
        "tuning.py", "--models", "none", "--bundle", f"demo={demo_int8_bundle}", "--seconds", "1",
        "--tune-seconds", "0.5", "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (report,) = tmp_path.glob("tuning.*.json")
    (row,) = json.loads(report.read_text())["bundles"]
    trunk = 2 * (os.cpu_count() or 1)  # fp32 / int8 at 1..cores threads; each of 3 heads fp32 / int8
    assert row["bundle"] == "demo" and row["combinations"] == trunk * 2**3
    for tune in (row["tune1"], row["tune2"]):
        assert tune["choice"].startswith("trunk onnxruntime ") and tune["vs_best"] > 0 and tune["seconds"] > 0
    assert set(row["goals"]) == {"vs_best", "vs_fp32", "tunes_apart", "tune_seconds"}
    assert f"| demo | {trunk * 2**3} |" in next(tmp_path.glob("tuning.*.md")).read_text()
