"""Over-the-air updates: A/B slots, staging from a directory / tarball / URL, head-only packages,
refusals (hash, traversal, links, self-test), crash-on-start rollback, a hot swap in a running
daemon between frames, and the ``edge-runtime update`` command."""

from __future__ import annotations

import functools
import http.server
import io
import json
import shutil
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge_runtime.bundle.reader import sha256_file
from edge_runtime.cli import main as runtime_main
from edge_runtime.config import RuntimeConfig
from edge_runtime.daemon.pipeline import Daemon
from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.trust.update_install import install_update
from edge_runtime.trust.updates import Slots, UpdateError
from exporter.cli import main as export_main
from exporter.selftest import write_selftest
from tests.conftest import write_npy_frames

SHAPE_FP32 = "heads/shape.fp32.onnx"
V2_SCORES = [1.0, 0.0, 0.0]


def _build(path: Path) -> Engine:
    return Engine.from_bundle(path, EngineOptions(precision="fp32", threads=1))


@pytest.fixture(scope="module")
def bundles(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(v1, v2): the demo bundle, and a copy whose fp32 ``shape`` head always says circle."""
    root = tmp_path_factory.mktemp("versions")
    v1 = root / "v1"
    shutil.copytree(demo_bundle, v1)
    v2 = root / "v2"
    shutil.copytree(demo_bundle, v2)
    model = onnx.load(str(v2 / SHAPE_FP32))
    for init in model.graph.initializer:
        if init.name.endswith("fc.bias"):
            init.CopyFrom(numpy_helper.from_array(np.array([100.0, 0.0, 0.0], dtype=np.float32), init.name))
    onnx.save(model, str(v2 / SHAPE_FP32))
    manifest = json.loads((v2 / "manifest.json").read_text())
    manifest["version"] = "2"
    manifest["files"][SHAPE_FP32] = sha256_file(v2 / SHAPE_FP32)
    (v2 / "manifest.json").write_text(json.dumps(manifest, indent=2))
    shutil.copytree(v2, root / "v2-stale-selftest")  # v1's golden outputs: its self-test fails
    write_selftest(v2)  # what the exporter does for a new version
    return v1, v2


def _tar(src: Path, out: Path, only: list[str] | None = None, prefix: str = "") -> Path:
    with tarfile.open(out, "w:gz") as tar:
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src).as_posix()
            if path.is_file() and (only is None or rel in only):
                tar.add(path, arcname=prefix + rel)
    return out


def _changed(v1: Path, v2: Path) -> list[str]:
    old = json.loads((v1 / "manifest.json").read_text())["files"]
    new = json.loads((v2 / "manifest.json").read_text())["files"]
    return sorted(rel for rel, digest in new.items() if old.get(rel) != digest)


def _head_package(v1: Path, v2: Path, out: Path) -> Path:
    return _tar(v2, out, only=["manifest.json", *_changed(v1, v2)])


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a temporary folder."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


def _shape_scores(engine: Engine) -> list[float]:
    frame = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    return [round(float(s), 4) for s in engine.infer(frame).results["shape"].to_dict()["scores"]]


@pytest.mark.parametrize("kind", ["dir", "tar.gz", "nested tgz", "url"])
def test_whole_bundle_update(kind: str, bundles: tuple[Path, Path], tmp_path: Path, http_root: Any) -> None:
    v1, v2 = bundles
    slots = Slots.open(tmp_path / "state")
    source = str(v2)
    if kind == "tar.gz":
        source = str(_tar(v2, tmp_path / "v2.tar.gz"))
    elif kind == "nested tgz":
        source = str(_tar(v2, tmp_path / "v2.tgz", prefix="demo-v2/"))
    elif kind == "url":
        base_url, folder = http_root
        _tar(v2, folder / "v2.tar.gz")
        source = f"{base_url}/v2.tar.gz"
    outcome, engine = install_update(slots, source, build_engine=_build, base=v1)
    assert outcome.ok, outcome.reason
    assert engine is None
    assert (outcome.version, outcome.slot) == ("2", "A")
    active = slots.active_bundle()
    assert active is not None and json.loads((active / "manifest.json").read_text())["version"] == "2"
    with _build(active) as new:
        assert _shape_scores(new) == V2_SCORES
    assert not list(slots.root.glob("staging-*"))
    state = slots.read_state()
    assert (state["active"], state["previous"]) == ("A", None)
    assert state["history"][-1]["outcome"] == "installed"


def test_head_only_package_fills_from_active_slot_and_ab_alternate(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    v1, v2 = bundles
    slots = Slots.open(tmp_path / "state")
    assert install_update(slots, str(v1), build_engine=_build)[0].ok  # v1 into slot A
    package = _head_package(v1, v2, tmp_path / "head.tar.gz")
    with tarfile.open(package) as tar:
        assert "trunk.fp32.onnx" not in tar.getnames()
    outcome, _ = install_update(slots, str(package), build_engine=_build)
    assert outcome.ok, outcome.reason
    assert (outcome.slot, outcome.previous_version) == ("B", "1")
    slot_b = slots.slot_path("B")
    assert (slot_b / "trunk.fp32.onnx").stat().st_ino == (slots.slot_path("A") / "trunk.fp32.onnx").stat().st_ino
    with _build(slot_b) as new:
        assert _shape_scores(new) == V2_SCORES
    assert slots.rollback("test") == "A"
    assert slots.read_state()["active"] == "A"


def test_head_package_for_another_base_names_the_file(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    v1, v2 = bundles
    other = tmp_path / "other"
    shutil.copytree(v2, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["files"]["heads/box.fp32.onnx"] = "sha256:" + "0" * 64  # the package expects another box head
    (other / "manifest.json").write_text(json.dumps(manifest))
    package = _tar(other, tmp_path / "pkg.tar.gz", only=["manifest.json", *_changed(v1, v2)])
    slots = Slots.open(tmp_path / "state")
    outcome, _ = install_update(slots, str(package), build_engine=_build, base=v1)
    assert not outcome.ok
    assert "heads/box.fp32.onnx" in outcome.reason and "another base" in outcome.reason
    assert slots.active_bundle() is None
    assert slots.read_state()["history"][-1]["outcome"] == "refused"


def _evil_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("../escape.txt", tarfile.REGTYPE, "'..'"),
        ("/etc/evil", tarfile.REGTYPE, "absolute path"),
        ("link", tarfile.SYMTYPE, "is a link"),
        ("hard", tarfile.LNKTYPE, "is a link"),
        ("dev", tarfile.CHRTYPE, "not a regular file"),
    ],
)
def test_unsafe_tar_members_rejected(name: str, kind: bytes, message: str, tmp_path: Path) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    if kind == tarfile.REGTYPE:
        member.size = 1
    else:
        member.linkname = "/etc/passwd"
    archive = _evil_tar(tmp_path / "evil.tar.gz", member)
    slots = Slots.open(tmp_path / "state")
    with pytest.raises(UpdateError, match="member") as info:
        slots.stage(str(archive))
    assert message in str(info.value) and name.lstrip("/") in str(info.value)
    assert not (tmp_path / "escape.txt").exists()
    assert not list(slots.root.glob("staging-*"))


def test_oversize_member_and_download_rejected(bundles: tuple[Path, Path], tmp_path: Path, http_root: Any) -> None:
    member = tarfile.TarInfo("big.bin")
    member.size = (1 << 20) + 1
    archive = _evil_tar(tmp_path / "big.tar.gz", member, b"\0" * member.size)
    slots = Slots.open(tmp_path / "state")
    with pytest.raises(UpdateError, match=r"'big.bin'.*limit"):
        slots.stage(str(archive), max_download_mb=1)
    base_url, folder = http_root
    shutil.copy(archive, folder / "big.tar.gz")
    (folder / "padding").write_bytes(b"")
    with pytest.raises(UpdateError, match="HTTP 404"):
        slots.stage(f"{base_url}/missing.tar.gz")
    with pytest.raises(UpdateError, match="unsupported scheme"):
        slots.stage("ftp://example.invalid/x.tar.gz")


def test_corrupt_update_refused_and_active_unchanged(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    v1, v2 = bundles
    slots = Slots.open(tmp_path / "state")
    assert install_update(slots, str(v1), build_engine=_build)[0].ok
    broken = tmp_path / "broken"
    shutil.copytree(v2, broken)
    (broken / SHAPE_FP32).write_bytes((broken / SHAPE_FP32).read_bytes()[:-10] + b"0123456789")
    outcome, _ = install_update(slots, str(broken), build_engine=_build)
    assert not outcome.ok and "checksum mismatch" in outcome.reason and SHAPE_FP32 in outcome.reason
    assert slots.read_state()["active"] == "A"
    assert not slots.slot_path("B").exists()
    assert not list(slots.root.glob("staging-*"))


def test_selftest_failure_refused_and_recorded(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    _v1, v2 = bundles
    stale = v2.parent / "v2-stale-selftest"  # new head weights, v1's golden outputs
    slots = Slots.open(tmp_path / "state")
    outcome, _ = install_update(slots, str(stale), build_engine=_build)
    assert not outcome.ok and "self-test failed" in outcome.reason and "'shape'" in outcome.reason
    assert slots.active_bundle() is None
    assert not list(slots.root.glob("staging-*"))
    assert slots.read_state()["history"][-1]["outcome"] == "refused"


def test_crash_on_start_rolls_back_after_n(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    v1, v2 = bundles
    slots = Slots.open(tmp_path / "state")
    assert install_update(slots, str(v1))[0].ok
    assert install_update(slots, str(v2))[0].ok
    assert slots.begin_boot(3) == "B"  # starts that never reach boot_ok
    assert slots.begin_boot(3) == "B"
    assert slots.begin_boot(3) == "B"
    assert slots.begin_boot(3) == "A"  # the 4th start rolls back first
    state = slots.read_state()
    assert (state["active"], state["previous"], state["pending_boot_attempts"]) == ("A", None, 1)
    assert "failed to start 3 times" in state["history"][-1]["reason"]
    slots.boot_ok()
    assert slots.read_state()["pending_boot_attempts"] == 0


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _wait_lines(path: Path, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = _lines(path)
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{path}: fewer than {count} lines after {timeout} s")


def _is_v2(line: dict[str, Any]) -> bool:
    return bool(line["results"]["shape"]["scores"] == V2_SCORES)


def test_running_daemon_swaps_between_frames_and_rolls_back(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    v1, v2 = bundles
    out = tmp_path / "results.jsonl"
    frames = write_npy_frames(tmp_path / "frames", 5, 96, 128, seed=1)
    config = RuntimeConfig.load(
        flags={
            "bundle": str(v1),
            "source": str(frames),
            "loop": True,
            "precision": "fp32",
            "threads": 1,
            "state_dir": str(tmp_path / "state"),
            "output": str(out),
            "device_id": "cam-ota",
        },
        environ={},
    )
    daemon = Daemon(config)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(daemon.run(install_signals=False)))
    thread.start()
    try:
        _wait_lines(out, 10)
        outcome = daemon.request_update(str(_head_package(v1, v2, tmp_path / "head.tar.gz")))
        assert outcome.ok, outcome.reason
        assert (outcome.version, outcome.previous_version, outcome.slot) == ("2", None, "A")
        after_update = len(_wait_lines(out, len(_lines(out)) + 10))
        back = daemon.request_rollback("test rollback")
        assert back.ok and back.slot is None and back.version == "1"
        _wait_lines(out, after_update + 10)
    finally:
        daemon.stop.set()
        thread.join(60)
    assert codes == [0]
    lines = _lines(out)
    assert len(lines) == len(out.read_text().splitlines())  # every line is complete JSON
    assert [line["frame_id"] for line in lines] == list(range(len(lines)))  # no frame lost
    assert [line["seq"] for line in lines] == list(range(len(lines)))
    kinds = [_is_v2(line) for line in lines]
    first_v2 = kinds.index(True)
    last_v2 = len(kinds) - 1 - kinds[::-1].index(True)
    assert not any(kinds[:first_v2]) and all(kinds[first_v2 : last_v2 + 1]) and not any(kinds[last_v2 + 1 :])
    assert last_v2 < len(kinds) - 1  # results after the rollback are v1's again
    assert all(set(line["results"]) == {"shape", "box"} or "mask" in line["results"] for line in lines)
    assert Slots.open(tmp_path / "state").read_state()["active"] is None


def test_daemon_follows_cli_update_and_starts_on_active_slot(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    v1, v2 = bundles
    out = tmp_path / "results.jsonl"
    state = tmp_path / "state"
    flags = {
        "bundle": str(v1),
        "source": "synthetic",
        "fps": 50.0,
        "precision": "fp32",
        "threads": 1,
        "state_dir": str(state),
        "output": str(out),
    }
    daemon = Daemon(RuntimeConfig.load(flags=flags, environ={}))
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    thread.start()
    try:
        _wait_lines(out, 5)
        args = ["update", str(v2), "--state-dir", str(state), "--bundle", str(v1)]
        assert runtime_main(args) == 0
        deadline = time.monotonic() + 60
        while not any(_is_v2(line) for line in _lines(out)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(_is_v2(line) for line in _lines(out))
    finally:
        daemon.stop.set()
        thread.join(60)
    # A fresh start runs the active slot.
    restarted = Daemon(RuntimeConfig.load(flags={**flags, "max_frames": 3, "fps": None}, environ={}))
    out.unlink()
    assert restarted.run(install_signals=False) == 0
    assert all(_is_v2(line) for line in _lines(out))


def test_cli_update_status_rollback_reset(
    bundles: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v1, v2 = bundles
    state = str(tmp_path / "state")
    common = ["--state-dir", state, "--bundle", str(v1)]
    assert runtime_main(["update", "--rollback", *common]) == 2  # nothing installed yet
    assert runtime_main(["update", str(v2), *common]) == 0
    assert "update ok: demo_multitask v2" in capsys.readouterr().out
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a tarball")
    assert runtime_main(["update", str(broken), *common]) == 1
    assert "update refused" in capsys.readouterr().out
    assert runtime_main(["update", "--status", *common]) == 0
    status = capsys.readouterr().out
    assert "slot A (active): demo_multitask v2" in status and "refused" in status
    assert runtime_main(["update", "--rollback", *common]) == 0
    assert "factory" in capsys.readouterr().out
    assert runtime_main(["update", str(v2), *common]) == 0
    assert runtime_main(["update", "--reset", *common]) == 0
    assert Slots.open(state).active_bundle() is None
    assert runtime_main(["update", *common]) == 2


def test_export_head_update_package(
    bundles: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v1, v2 = bundles
    package = tmp_path / "pkg.tar.gz"
    assert export_main(["head-update", str(v2), "--base", str(v1), "-o", str(package)]) == 0
    printed = capsys.readouterr().out
    assert "trunk.fp32.onnx" in printed
    with tarfile.open(package) as tar:
        assert sorted(tar.getnames()) == sorted(["manifest.json", *_changed(v1, v2)])
        assert SHAPE_FP32 in tar.getnames() and "trunk.fp32.onnx" not in tar.getnames()
    slots = Slots.open(tmp_path / "state")
    outcome, _ = install_update(slots, str(package), build_engine=_build, base=v1)
    assert outcome.ok, outcome.reason


def test_signed_head_update_with_trusted_keys(
    bundles: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With trusted keys only signed packages install; a signed head-only package (manifest.sig
    in the tarball, the trunk taken from the running bundle) installs and the daemon starts on it
    with its signature checked."""
    from edge_runtime.trust.keys import generate_keypair
    from exporter.signing import sign_bundle

    v1, v2 = (Path(shutil.copytree(b, tmp_path / b.name)) for b in bundles)
    (tmp_path / "keys").mkdir()
    private, public = generate_keypair(tmp_path / "keys" / "owner")
    sign_bundle(v1, private)
    unsigned = _head_package(v1, v2, tmp_path / "unsigned.tar.gz")
    sign_bundle(v2, private)
    signed = _tar(v2, tmp_path / "signed.tar.gz", only=["manifest.json", "manifest.sig", *_changed(v1, v2)])
    state = str(tmp_path / "state")
    common = ["--state-dir", state, "--bundle", str(v1), "--trusted-key", str(public)]
    assert runtime_main(["update", str(unsigned), *common]) == 1
    assert "unsigned: no manifest.sig" in capsys.readouterr().out
    assert runtime_main(["update", str(signed), *common]) == 0
    flags = {
        "bundle": str(v1), "source": "synthetic", "max_frames": 3, "precision": "fp32", "threads": 1,
        "state_dir": state, "output": str(tmp_path / "out.jsonl"), "trusted_keys": [str(public)],
    }  # fmt: skip
    assert Daemon(RuntimeConfig.load(flags=flags, environ={})).run(install_signals=False) == 0
    assert all(_is_v2(line) for line in _lines(tmp_path / "out.jsonl"))


def test_a_new_deployment_of_the_configured_bundle_supersedes_the_slots(
    bundles: tuple[Path, Path], tmp_path: Path
) -> None:
    """deploy.sh switches bundles/current to a new factory bundle: the next start runs it, not
    an older over-the-air update."""
    v1, v2 = bundles
    factory = Path(shutil.copytree(v1, tmp_path / "factory"))
    slots = Slots.open(tmp_path / "state")
    assert slots.begin_boot(3, factory=factory) is None  # first start: remembers the factory bundle
    outcome, _ = install_update(slots, str(v2), build_engine=_build, base=factory)
    assert outcome.ok, outcome.reason
    assert slots.begin_boot(3, factory=factory) == "A"  # same factory bundle: the update runs
    slots.boot_ok()
    manifest = json.loads((factory / "manifest.json").read_text())
    manifest["version"] = "1.1"  # a new deployment
    (factory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    assert slots.begin_boot(3, factory=factory) is None
    state = slots.read_state()
    assert state["active"] is None and state["previous"] == "A"
    assert state["history"][-1]["outcome"] == "reset" and "deployed anew" in state["history"][-1]["reason"]


def test_self_test_runs_at_start(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    """At start the daemon runs the bundle's golden self-test: a factory bundle that fails it
    does not start (the head is named); an update slot that fails it is rolled back."""
    from edge_runtime.trust.selftest import SelfTestError

    v1, v2 = bundles
    stale = v2.parent / "v2-stale-selftest"  # v2's graphs with v1's golden outputs
    flags = {
        "source": "synthetic", "max_frames": 3, "precision": "fp32", "threads": 1,
        "state_dir": str(tmp_path / "state"), "output": str(tmp_path / "out.jsonl"),
    }  # fmt: skip
    first = {**flags, "bundle": str(stale), "state_dir": str(tmp_path / "state-stale")}
    with pytest.raises(SelfTestError, match="shape"):
        Daemon(RuntimeConfig.load(flags=first, environ={})).run(install_signals=False)

    slots = Slots.open(tmp_path / "state")
    outcome, _ = install_update(slots, str(v2), build_engine=_build, base=v1)
    assert outcome.ok, outcome.reason
    slot_dir = slots.active_bundle()
    assert slot_dir is not None
    shutil.copy2(stale / "selftest" / "expected.npz", slot_dir / "selftest" / "expected.npz")
    manifest = json.loads((slot_dir / "manifest.json").read_text())
    manifest["files"]["selftest/expected.npz"] = sha256_file(slot_dir / "selftest" / "expected.npz")
    (slot_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    assert Daemon(RuntimeConfig.load(flags={**flags, "bundle": str(v1)}, environ={})).run(install_signals=False) == 0
    assert not any(_is_v2(line) for line in _lines(tmp_path / "out.jsonl"))  # the factory bundle ran
    state = slots.read_state()
    assert state["active"] is None and "failed its self-test at start" in state["history"][-1]["reason"]
