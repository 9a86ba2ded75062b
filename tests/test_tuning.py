"""``edge-runtime tune`` and ``backend``/``precision`` ``auto``: candidates, the greedy
measurement on real ONNX Runtime sessions of the demo bundle, ``tuning.json`` (keyed, atomic,
stale and corrupt files ignored with the reason), the engine running a per-graph choice, and the
daemon's settings taking it. No timing is asserted: only what was measured and chosen."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle.reader import load_bundle
from edge_runtime.cli import main as runtime_main
from edge_runtime.config import RuntimeConfig
from edge_runtime.daemon.validation import build_engine
from edge_runtime.errors import ConfigError
from edge_runtime.inference.artifact_choice import plan_assigned
from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.tuning.configs import GraphConfig, graph_candidates, passed_gate
from edge_runtime.tuning.record import (
    TUNING_NAME,
    TuningRecord,
    current_key,
    load_tuning,
    save_tuning,
)
from edge_runtime.tuning.search import TuneOptions, format_table, tune
from tests.cli_errors import one_error_line

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tuned(demo_int8_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One tune of the demo bundle (1 s of timing) through the CLI: the state dir and tuning.json."""
    state = tmp_path_factory.mktemp("state")
    assert runtime_main(["tune", str(demo_int8_bundle), "--state-dir", str(state), "--seconds", "1"]) == 0
    return state, json.loads((state / TUNING_NAME).read_text())


def test_graph_config_checks_and_round_trips() -> None:
    config = GraphConfig("onnxruntime", "int8", 2, "CPUExecutionProvider")
    assert GraphConfig.from_mapping(config.to_dict(), "x") == config
    assert config.describe() == "onnxruntime int8 x2"
    assert GraphConfig("onnxruntime", "fp16", 1, "CUDAExecutionProvider").describe() == "onnxruntime[CUDA] fp16 x1"
    assert GraphConfig("onnxruntime", "fp16", 1, "CUDAExecutionProvider").providers == (
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    )
    for bad, words in (
        ({"backend": "tensorrt", "precision": "fp32", "threads": 1}, "backend 'tensorrt'"),
        ({"backend": "tflite", "precision": "int4", "threads": 1}, "precision 'int4'"),
        ({"backend": "tflite", "precision": "int8", "threads": 0}, "threads must be an integer >= 1, got 0"),
        ({"backend": "tflite", "precision": "int8", "threads": 1, "provider": 3}, "x.provider"),
    ):
        with pytest.raises(ConfigError, match=r"^x") as caught:
            GraphConfig.from_mapping(bad, "x")
        assert words in str(caught.value)


def test_candidates_are_the_gated_artifacts_at_each_thread_count(demo_int8_bundle: Path) -> None:
    manifest = load_bundle(demo_int8_bundle, verify_hashes=False).manifest
    trunk = graph_candidates("trunk", manifest.trunk, cores=3, backends=["onnxruntime"])
    assert [c.describe() for c in trunk] == [
        *(f"onnxruntime fp32 x{n}" for n in (1, 2, 3)),
        *(f"onnxruntime int8 x{n}" for n in (1, 2, 3)),
    ]
    head = graph_candidates("shape", manifest.heads["shape"], cores=3, backends=["onnxruntime"])
    assert [c.describe() for c in head] == ["onnxruntime fp32 x1", "onnxruntime int8 x1"]
    # an INT8 artifact without a passing measurement is no candidate
    int8 = next(a for a in manifest.trunk.artifacts if a.precision == "int8")
    assert passed_gate(int8)
    assert not passed_gate(replace(int8, fidelity=None))
    assert not passed_gate(replace(int8, fidelity={"agreement": 0.5, "min_agreement": 0.99}))


def test_tune_writes_a_keyed_choice_that_the_engine_runs(demo_int8_bundle: Path, tuned: tuple[Path, dict]) -> None:
    state, data = tuned
    bundle = load_bundle(demo_int8_bundle, verify_hashes=False)
    assert data["key"] == current_key(bundle).to_dict()
    assert set(data["choice"]) == {"trunk", "shape", "box", "mask"}
    rounds = {row["round"] for row in data["measurements"]}
    assert rounds >= {"trunk", "head shape", "head box", "head mask"}
    for name in rounds:
        rows = [r for r in data["measurements"] if r["round"] == name]
        assert sum(r["chosen"] for r in rows) == 1
        baseline = next(r for r in rows if r["candidate"] == "baseline")
        assert baseline["vs_baseline"] == 1.0 and baseline["runs"] >= 5
    trunk_rows = [r["candidate"] for r in data["measurements"] if r["round"] == "trunk"]
    assert "onnxruntime int8 x1" in trunk_rows
    choice, why = load_tuning(state, current_key(bundle))
    assert choice is not None and why.startswith("tuned ")
    with Engine.from_bundle(demo_int8_bundle, EngineOptions(graphs=choice, origin=why)) as engine:
        assert {g: a.precision for g, a in engine.artifacts.items()} == {g: c.precision for g, c in choice.items()}
        assert all(run.reason == why for run in engine.graphs)
        assert engine.graphs[0].threads == choice["trunk"].threads
        assert engine.infer(np.zeros((96, 128, 3), np.uint8)).results.keys() == set(choice) - {"trunk"}


def test_auto_takes_the_tuning_and_says_why_otherwise(
    demo_int8_bundle: Path, tuned: tuple[Path, dict], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state, data = tuned

    def engine_for(state_dir: Path, **flags: object) -> list[str]:
        config = RuntimeConfig.load(
            flags={"bundle": str(demo_int8_bundle), "source": "synthetic", "state_dir": str(state_dir), **flags},
            environ={},
        )
        with build_engine(config, demo_int8_bundle) as engine:
            return [run.describe() for run in engine.graphs]

    chosen = data["choice"]
    lines = engine_for(state)
    assert lines[0].startswith(f"trunk: onnxruntime {chosen['trunk']['precision']}, {chosen['trunk']['threads']}")
    assert all("(tuned " in line for line in lines)
    assert engine_for(state, threads=2)[0].startswith(f"trunk: onnxruntime {chosen['trunk']['precision']}, 2 threads")
    assert all(line.endswith("(as configured)") for line in engine_for(state, precision="int8"))
    # no tuning / another bundle's / a corrupt one: the profile's choice, and the log says why
    other = tmp_path / "other"
    other.mkdir()
    stale = json.loads((state / TUNING_NAME).read_text())
    stale["key"]["bundle"] = "sha256:" + "0" * 64
    stale["key"]["runtimes"]["onnxruntime"] = "0.1"
    (other / TUNING_NAME).write_text(json.dumps(stale))
    with caplog.at_level(logging.INFO):
        lines = engine_for(other)
    assert all(line.endswith("(device profile, not tuned)") for line in lines)
    assert "was measured for another setup (a new bundle; onnxruntime 0.1 -> " in caplog.text
    (other / TUNING_NAME).write_text('{"version": 1, "choice": {"trunk": {"backend": "gpu"}}')
    caplog.clear()
    with caplog.at_level(logging.INFO):
        engine_for(other)
    assert f"{other / TUNING_NAME} is corrupt and ignored" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        engine_for(tmp_path / "empty")
    assert "not tuned (no tuning.json in " in caplog.text


def test_a_head_the_tuning_did_not_see_follows_the_trunk(demo_int8_bundle: Path) -> None:
    manifest = load_bundle(demo_int8_bundle, verify_hashes=False).manifest
    plan = plan_assigned(manifest, {"trunk": ("onnxruntime", "int8"), "shape": ("onnxruntime", "fp32")})
    assert plan.choices["shape"].artifact.precision == "fp32" and plan.choices["shape"].reason is None
    assert plan.choices["box"].artifact.precision == "int8"
    assert plan.choices["box"].reason == "not in the tuning: as the trunk"
    with pytest.raises(ConfigError, match="needs the trunk"):
        plan_assigned(manifest, {"shape": ("onnxruntime", "fp32")})


def test_nothing_to_tune_when_each_graph_has_one_artifact(demo_int8_bundle: Path, tmp_path: Path) -> None:
    fp32 = tmp_path / "fp32"
    shutil.copytree(demo_int8_bundle, fp32)
    manifest = json.loads((fp32 / "manifest.json").read_text())
    for entry in [manifest["trunk"], *manifest["heads"].values()]:
        entry["artifacts"] = [a for a in entry["artifacts"] if a["precision"] == "fp32"]
    (fp32 / "manifest.json").write_text(json.dumps(manifest))
    for path in fp32.rglob("*int8*"):
        path.unlink()
    result = tune(load_bundle(fp32, verify_hashes=False), TuneOptions(seconds=0.5, cores=1))
    assert result.nothing_to_tune
    assert result.choice == result.baseline
    assert "chosen: trunk onnxruntime fp32 x1" in format_table(result)


def test_bad_seconds_and_bad_bundles_are_one_line(demo_int8_bundle: Path, tmp_path: Path) -> None:
    def tune_cli(*args: str) -> str:
        command = [sys.executable, "-m", "edge_runtime.cli", "tune", *args, "--state-dir", str(tmp_path / "s")]
        return one_error_line(subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120))

    for value in ("0", "nan", "100000"):
        assert tune_cli(str(demo_int8_bundle), "--seconds", value).startswith("edge-runtime: error: --seconds must be ")
    assert (
        tune_cli(str(tmp_path / "nowhere")) == f"edge-runtime: error: {tmp_path / 'nowhere'}: no such bundle directory"
    )
    assert not (tmp_path / "s").exists()


def test_a_tune_stopped_by_sigterm_writes_nothing(demo_int8_bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    old = TuningRecord(
        current_key(load_bundle(demo_int8_bundle, verify_hashes=False)),
        {"trunk": GraphConfig("onnxruntime", "fp32", 1)},
    )
    save_tuning(state, old)
    before = (state / TUNING_NAME).read_bytes()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_runtime.cli",
            "tune",
            str(demo_int8_bundle),
            "--state-dir",
            str(state),
            "--seconds",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    assert process.stderr is not None
    for line in process.stderr:  # wait until it is timing
        if "timing" in line or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "tune stopped" in err and "no tuning written" in err
    assert (state / TUNING_NAME).read_bytes() == before
    assert sorted(os.listdir(state)) == [TUNING_NAME]


def test_device_says_whether_the_bundle_is_tuned_here(
    demo_int8_bundle: Path, tuned: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, data = tuned
    assert runtime_main(["device", "--bundle", str(demo_int8_bundle), "--state-dir", str(state), "--json"]) == 0
    tuning = json.loads(capsys.readouterr().out)["tuning"]
    assert tuning["tuned"] and tuning["reason"].startswith("tuned ")
    assert tuning["choice"] == {g: GraphConfig.from_mapping(c, g).describe() for g, c in data["choice"].items()}
    assert runtime_main(["device", "--bundle", str(demo_int8_bundle), "--state-dir", str(tmp_path)]) == 0
    assert f"tuning:   not tuned (no tuning.json in {tmp_path})" in capsys.readouterr().out


def test_tune_on_start_tunes_an_untuned_daemon_and_swaps_between_frames(
    demo_int8_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from edge_runtime.daemon.pipeline import Daemon

    flags = {
        "bundle": str(demo_int8_bundle),
        "source": "synthetic",
        "max_frames": 40,
        "state_dir": str(tmp_path / "state"),
        "output": str(tmp_path / "results.jsonl"),
        "tune_on_start": True,
        "tune_seconds": 0.5,
    }
    with caplog.at_level(logging.INFO):
        assert Daemon(RuntimeConfig.load(flags=flags, environ={})).run(install_signals=False) == 0
    assert "tune requested (tune_on_start)" in caplog.text
    assert "tuned (tune_on_start) in " in caplog.text
    assert "swapped to demo_multitask v1 between frames" in caplog.text
    assert (tmp_path / "state" / TUNING_NAME).is_file()
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame_id"] for line in lines] == list(range(40))  # a paused source loses nothing
    # tuned now: the next start takes the tuning and does not tune again
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert Daemon(RuntimeConfig.load(flags={**flags, "max_frames": 3}, environ={})).run(install_signals=False) == 0
    assert "tune requested" not in caplog.text and "(tuned " in caplog.text
    # with precision set, tune_on_start says why it does nothing
    caplog.clear()
    with caplog.at_level(logging.INFO):
        flags = {**flags, "max_frames": 3, "precision": "fp32"}
        assert Daemon(RuntimeConfig.load(flags=flags, environ={})).run(install_signals=False) == 0
    assert "tune_on_start: not tuning: precision is set, so a tuning would not be used" in caplog.text


def test_bench_runs_the_tuning_and_says_so(
    demo_int8_bundle: Path, tuned: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, data = tuned
    out = tmp_path / "bench"
    args = ["bench", str(demo_int8_bundle), "--quick", "--state-dir", str(state), "--out", str(out)]
    assert runtime_main(args) == 0
    assert ", per graph, " in capsys.readouterr().out
    engine = json.loads(next(out.glob("*.json")).read_text())["engine"]
    assert engine["tuning"].startswith("tuned ")
    trunk = data["choice"]["trunk"]
    assert engine["graphs"][0].startswith(f"trunk: {trunk['backend']} {trunk['precision']}, {trunk['threads']} threads")
    assert runtime_main(["bench", str(demo_int8_bundle), "--quick", "--state-dir", str(tmp_path / "none")]) == 0
    assert "(device profile, not tuned)" in capsys.readouterr().out
    assert runtime_main(["bench", str(demo_int8_bundle), "--quick", "--precision", "int8"]) == 0
    assert "trunk: onnxruntime int8" in capsys.readouterr().out


def test_tune_on_start_tunes_a_bundle_an_update_brings(
    demo_int8_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    from edge_runtime.daemon.pipeline import Daemon

    v2 = tmp_path / "v2"
    shutil.copytree(demo_int8_bundle, v2)
    manifest = json.loads((v2 / "manifest.json").read_text())
    manifest["version"] = "2"
    (v2 / "manifest.json").write_text(json.dumps(manifest))
    state = tmp_path / "state"
    key = current_key(load_bundle(demo_int8_bundle, verify_hashes=False))
    save_tuning(state, TuningRecord(key, {"trunk": GraphConfig("onnxruntime", "fp32", 1)}))  # v1: tuned already
    flags = {
        "bundle": str(demo_int8_bundle),
        "source": "synthetic",
        "fps": 100.0,
        "state_dir": str(state),
        "output": str(tmp_path / "results.jsonl"),
        "tune_on_start": True,
        "tune_seconds": 0.5,
    }
    daemon = Daemon(RuntimeConfig.load(flags=flags, environ={}))
    with caplog.at_level(logging.INFO):
        thread = threading.Thread(target=lambda: daemon.run(install_signals=False))
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while daemon.current_engine is None and time.monotonic() < deadline:
                time.sleep(0.05)
            outcome = daemon.request_update(str(v2))
            assert outcome.ok, outcome
            while "tuned (tune_on_start, new bundle)" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            daemon.stop.set()
            thread.join(60)
    assert "tune requested (tune_on_start)" not in caplog.text  # v1 was tuned
    assert "tuned (tune_on_start, new bundle) in " in caplog.text
    stored = json.loads((state / TUNING_NAME).read_text())
    assert stored["key"] == current_key(load_bundle(v2, verify_hashes=False)).to_dict()
