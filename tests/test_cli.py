"""``edge-export`` and ``edge-runtime`` as real subprocesses: every user mistake ends in
exit code 2 and one ``error:`` line naming the problem, never a traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx_models as m
import pytest

EXPORT = [sys.executable, "-m", "exporter.cli"]
RUNTIME = [sys.executable, "-m", "edge_runtime.cli"]


def run(command: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Model files of every kind the error table needs, in ``tmp_path``."""
    valid = m.hard_sharing().SerializeToString()
    (tmp_path / "model.onnx").write_bytes(valid)
    (tmp_path / "single.onnx").write_bytes(m.single_output().SerializeToString())
    (tmp_path / "independent.onnx").write_bytes(m.independent_outputs().SerializeToString())
    (tmp_path / "truncated.onnx").write_bytes(valid[: len(valid) // 2])
    (tmp_path / "random.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "text.onnx").write_text("this is not a model\n", encoding="utf-8")
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "folder.onnx").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("keep me", encoding="utf-8")
    np.save(tmp_path / "small.npy", np.zeros((2, 3, 8, 8), np.float32))
    (tmp_path / "input.toml").write_text('layuot = "NCHW"\n', encoding="utf-8")
    (tmp_path / "heads.toml").write_text('[heads.clss]\ndecoder = { type = "raw" }\n', encoding="utf-8")
    return tmp_path


SPLIT_ERRORS = [
    pytest.param(["folder.onnx"], "folder.onnx: not a file", id="model-is-a-directory"),
    pytest.param(["models"], "models: not a file", id="model-is-a-directory-no-suffix"),
    pytest.param(["missing.onnx"], "missing.onnx: no such file", id="model-missing"),
    pytest.param(["missing_model"], "missing_model: no such file", id="model-missing-no-suffix"),
    pytest.param(["random.onnx"], "random.onnx: not an ONNX model", id="random-bytes"),
    pytest.param(["text.onnx"], "text.onnx: not an ONNX model", id="text-file"),
    pytest.param(["empty.onnx"], "empty.onnx: empty file, not an ONNX model", id="empty-file"),
    pytest.param(["truncated.onnx"], "truncated.onnx: not an ONNX model (or truncated)", id="truncated"),
    pytest.param(["independent.onnx"], "the outputs share no trunk", id="no-shared-trunk"),
    pytest.param(
        ["model.onnx", "--task", "classes=clss"],
        "task 'classes' names output 'clss', which the model does not have (did you mean 'cls'?)",
        id="task-names-missing-output",
    ),
    pytest.param(["model.onnx", "--task", "cls"], "--task 'cls': expected NAME=OUTPUT", id="task-syntax"),
    pytest.param(
        ["model.onnx", "--boundary", "feet"],
        "--boundary names tensor 'feet', which the model does not have (did you mean 'feat'",
        id="boundary-names-missing-tensor",
    ),
    pytest.param(["model.onnx", "--calib", "small.npy"], "is neither preprocessed model inputs", id="calib-shape"),
    pytest.param(
        ["model.onnx", "--input-spec", "input.toml"],
        "input.toml: unknown key 'layuot' (did you mean 'layout'?)",
        id="input-spec-unknown-key",
    ),
    pytest.param(
        ["model.onnx", "--head-spec", "heads.toml"],
        "head 'clss' does not match any head of the model (found: cls, seg)",
        id="head-spec-unknown-head",
    ),
    pytest.param(["model.onnx", "--tolerance", "-1"], "verification failed", id="verification-fails"),
]


@pytest.mark.parametrize(("args", "message"), SPLIT_ERRORS)
def test_split_errors(args: list[str], message: str, workdir: Path) -> None:
    before = sorted(p.name for p in workdir.iterdir())

    done = run(EXPORT, "split", *args, "-o", "bundle", cwd=workdir)

    assert done.returncode == 2, done.stderr
    assert "edge-export: error: " in done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in workdir.iterdir()) == before  # nothing written, no staging leftovers


def test_split_refuses_a_non_empty_output_dir(workdir: Path) -> None:
    done = run(EXPORT, "split", "model.onnx", "-o", "full", cwd=workdir)

    assert done.returncode == 2
    assert "edge-export: error: full: directory exists and is not empty; use --force to replace it" in done.stderr
    assert "Traceback" not in done.stderr
    assert [p.name for p in (workdir / "full").iterdir()] == ["keep.txt"]
    assert (workdir / "full" / "keep.txt").read_text(encoding="utf-8") == "keep me"

    forced = run(EXPORT, "split", "model.onnx", "-o", "full", "--force", cwd=workdir)

    assert forced.returncode == 0, forced.stderr
    assert not (workdir / "full" / "keep.txt").exists()
    assert (workdir / "full" / "manifest.json").is_file()


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        pytest.param(EXPORT, ["inspect", "models"], "manifest.json: missing", id="export-inspect-not-a-bundle"),
        pytest.param(
            RUNTIME, ["inspect", "nowhere"], "nowhere: no such bundle directory", id="runtime-inspect-missing"
        ),
        pytest.param(
            RUNTIME,
            ["inspect", "model.onnx"],
            "a bundle is a directory holding manifest.json",
            id="runtime-inspect-file",
        ),
        pytest.param(EXPORT, ["split", "model.onnx"], "the following arguments are required: -o", id="usage-no-output"),
        pytest.param(EXPORT, ["frobnicate"], "invalid choice: 'frobnicate'", id="usage-unknown-command"),
    ],
)
def test_other_errors(command: list[str], args: list[str], message: str, workdir: Path) -> None:
    done = run(command, *args, cwd=workdir)

    assert done.returncode == 2
    assert "error: " in done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_split_then_inspect(workdir: Path) -> None:
    split = run(EXPORT, "split", "model.onnx", "-o", "bundle", "--name", "demo", "--version", "3", cwd=workdir)

    assert split.returncode == 0, split.stderr
    lines = split.stdout.splitlines()
    assert lines[:3] == [
        f"wrote {(workdir / 'bundle').resolve()}",
        "  boundary: feat",
        "  heads:    cls (cls), seg (seg)",
    ]
    verified = re.fullmatch(r"  verified: max abs error (\S+) over 4 inputs", lines[3])
    assert verified is not None and float(verified.group(1)) <= 1e-5
    assert len(lines) == 4
    assert "[7/7] writing bundle done" in split.stderr
    manifest = json.loads((workdir / "bundle" / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["name"], manifest["version"]) == ("demo", "3")

    for command in (EXPORT, RUNTIME):
        shown = run(command, "inspect", "bundle", cwd=workdir)
        assert shown.returncode == 0, shown.stderr
        assert "name     demo v3  (edge-bundle/1" in shown.stdout
        assert "boundary feat float32[1x8x16x16]" in shown.stdout
        assert re.search(r"^trunk\s+image\s+feat\s", shown.stdout, re.MULTILINE)
        assert re.search(r"^head:cls\s+feat\s+cls\s+raw\s", shown.stdout, re.MULTILINE)
        assert re.search(r"^head:seg\s+feat\s+seg\s+raw\s", shown.stdout, re.MULTILINE)
        assert "in 9 files (sha256 verified)" in shown.stdout  # 3 graphs, 4 self-test frames, expected outputs

    head = workdir / "bundle" / "heads" / "seg.fp32.onnx"
    data = bytearray(head.read_bytes())
    data[-1] ^= 0xFF
    head.write_bytes(bytes(data))
    for command, prog in ((EXPORT, "edge-export"), (RUNTIME, "edge-runtime")):
        broken = run(command, "inspect", "bundle", cwd=workdir)
        assert broken.returncode == 2
        assert f"{prog}: error: " in broken.stderr
        assert "seg.fp32.onnx: checksum mismatch" in broken.stderr
        assert "Traceback" not in broken.stderr


def test_quiet_split_prints_only_the_result(workdir: Path) -> None:
    done = run(EXPORT, "-q", "split", "model.onnx", "-o", "bundle", cwd=workdir)

    assert done.returncode == 0
    # only warnings are left: here, that the heads have no decoder (raw tensors on the wire)
    assert done.stderr.count("has no decoder") == 1  # cls has 5 values: small enough to send raw
    assert "[1/7]" not in done.stderr
    assert done.stdout.startswith("wrote ")


@pytest.mark.parametrize(
    ("command", "args", "example"),
    [
        pytest.param(EXPORT, ["--help"], "edge-export split model.onnx -o bundle", id="edge-export"),
        pytest.param(
            EXPORT, ["split", "--help"], "edge-export split model.onnx -o bundle --task det=boxes,scores", id="split"
        ),
        pytest.param(EXPORT, ["inspect", "--help"], "edge-export inspect build/demo_bundle", id="export-inspect"),
        pytest.param(RUNTIME, ["--help"], "edge-runtime inspect build/demo_bundle", id="edge-runtime"),
        pytest.param(RUNTIME, ["inspect", "--help"], "edge-runtime inspect build/demo_bundle", id="runtime-inspect"),
    ],
)
def test_help_shows_examples(command: list[str], args: list[str], example: str, tmp_path: Path) -> None:
    done = run(command, *args, cwd=tmp_path)

    assert done.returncode == 0
    assert re.search(r"^examples?:$", done.stdout, re.MULTILINE)
    assert example in done.stdout


def test_every_runtime_subcommand_dispatches_to_its_own_handler() -> None:
    """Each subcommand carries its handler (``set_defaults(func=...)``): none falls through to
    another command's code."""
    import argparse

    from edge_runtime import cli

    parser = cli._build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    funcs = {name: sub.get_default("func") for name, sub in subparsers.choices.items()}
    assert all(callable(f) for f in funcs.values()), funcs
    assert len({id(f) for f in funcs.values()}) == len(funcs)
    assert funcs["inspect"] is cli._inspect and funcs["run"] is cli._run


def test_every_export_subcommand_dispatches_to_its_own_handler() -> None:
    """``edge-export`` too: each subcommand carries its handler, none falls through to ``inspect``."""
    import argparse

    from exporter import cli

    parser = cli._build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    funcs = {name: sub.get_default("func") for name, sub in subparsers.choices.items()}
    assert all(callable(f) for f in funcs.values()), funcs
    assert len({id(f) for f in funcs.values()}) == len(funcs)
    assert funcs["inspect"] is cli._run_inspect and funcs["split"] is cli._run_split
    assert funcs["head-update"] is cli._run_head_update and funcs["sign"] is cli._run_sign


def test_runtime_errors_are_one_line_and_verbose_adds_the_traceback_with_its_cause(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{not json")
    plain = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "inspect", str(bundle)], capture_output=True, text=True, check=False
    )
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == [
        f"edge-runtime: error: {bundle}/manifest.json: not a readable JSON manifest: "
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    ]
    verbose = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "-v", "inspect", str(bundle)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verbose.returncode == 2
    assert "Traceback" in verbose.stderr and "JSONDecodeError" in verbose.stderr  # the cause is kept
