"""``edge-runtime bench`` end to end in quick mode: the files it writes and its errors.
No timing assertions."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.broker import BrokerProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def quick_run(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench")
    proc = _bench(str(demo_bundle), "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_quick_json_has_every_stage(quick_run: tuple[Path, str]) -> None:
    out, stdout = quick_run
    report = json.loads((out / "latency.json").read_text())
    assert report["schema"] == "edge-bench/1"
    stages = set(report["timings_ms"])
    assert {"preprocess", "trunk", "decode", "encode", "total"} <= stages
    assert any(s.startswith("head:") for s in stages)
    assert report["frames"] == 20
    assert report["timings_ms"]["total"]["n"] == 20
    for key in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms"):
        assert report["timings_ms"]["trunk"][key] > 0
    assert report["fps"] > 0
    assert set(report["memory"]) == {"peak_rss_mib_before", "peak_rss_mib_after_load", "peak_rss_mib_after"}
    assert report["environment"]["machine"]
    assert report["profile"]["name"]
    assert "total" in stdout and "fps" in stdout


def test_quick_csv_has_one_row_per_stage(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    rows = list(csv.reader((out / "latency.csv").open(encoding="utf-8")))
    assert rows[0] == ["stage", "n", "mean_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms"]
    report = json.loads((out / "latency.json").read_text())
    assert [r[0] for r in rows[1:]] == list(report["timings_ms"])
    assert all(float(v) >= 0 for r in rows[1:] for v in r[2:])


def test_quick_markdown(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    text = (out / "latency.md").read_text(encoding="utf-8")
    assert text.startswith("# Latency:")
    assert "| total |" in text


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib (the bench extra) is not installed: no PNG charts")
def test_quick_png_charts(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    for name in ("latency.stages.png", "latency.hist.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC


@pytest.mark.skipif(HAS_MATPLOTLIB, reason="matplotlib is installed: charts are written")
def test_quick_says_charts_skipped(quick_run: tuple[Path, str]) -> None:
    out, stdout = quick_run
    assert "PNG charts skipped" in stdout
    assert not list(out.glob("*.png"))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--backend", "onnxrt"], "backend 'onnxrt' is not one of onnxruntime, tflite"),
        (["--precision", "fp64"], "precision 'fp64' is not one of fp32, fp16, int8"),
        (["--threads", "0"], "threads must be >= 1"),
        (["--size", "big"], "expected WIDTHxHEIGHT"),
    ],
)
def test_bad_option_is_one_line_exit_2(demo_bundle: Path, tmp_path: Path, flags: list[str], message: str) -> None:
    proc = _bench(str(demo_bundle), "--quick", "--out", str(tmp_path), *flags)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edge-runtime: error:") and message in lines[0]
    assert not list(tmp_path.iterdir())


def test_latency_script_quick(demo_bundle: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "benchmarks/latency.py", str(demo_bundle), "--quick", "--out", str(tmp_path), "--name", "x"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "x.json").read_text())["benchmark"] == "latency"


@pytest.mark.mqtt5
def test_publish_and_ack_stages_with_a_broker(broker: BrokerProcess, demo_bundle: Path, tmp_path: Path) -> None:
    proc = _bench(str(demo_bundle), "--quick", "--broker", broker.url, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    timings = json.loads((tmp_path / "latency.json").read_text())["timings_ms"]
    assert timings["publish"]["n"] == 20
    assert 1 <= timings["publish_to_ack"]["n"] <= 20 + 3  # late warm-up acks may slip in
    assert "publish_to_ack" in proc.stdout


def test_unreachable_broker_is_one_line(demo_bundle: Path, tmp_path: Path) -> None:
    proc = _bench(str(demo_bundle), "--quick", "--broker", f"mqtt://127.0.0.1:{free_port()}")
    assert proc.returncode == 2
    assert "bench --broker" in proc.stderr and "Traceback" not in proc.stderr
