"""``examples/run_demo.py`` (what ``make demo`` runs) end to end on a copy of the demo bundle:
INT8 step, a real broker, the daemon, the subscriber; every result sent arrives, and neither
the script nor the daemon it starts imports torch."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.broker import amqtt_installed, find_mosquitto

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "run_demo.py"


def _torch_trap(folder: Path, marker: Path) -> Path:
    """A ``torch`` package first on the path that records any import of it and fails it."""
    (folder / "torch").mkdir(parents=True)
    (folder / "torch" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported\\n')\nraise ImportError('the demo must not import torch')\n"
    )
    return folder


@pytest.mark.parametrize(
    ("kind", "available", "why"),
    [
        ("mosquitto", lambda: find_mosquitto() is not None, "mosquitto is not installed"),
        ("amqtt", amqtt_installed, "amqtt is not installed (pip install -e '.[dev]')"),
    ],
)
def test_demo_delivers_every_result(demo_bundle: Path, tmp_path: Path, kind: str, available, why: str) -> None:
    if not available():
        print(why)
        pytest.skip(why)
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle)
    marker = tmp_path / "torch-imported"
    trap = _torch_trap(tmp_path / "trap", marker)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(trap), str(ROOT)])}
    command = [
        sys.executable, str(SCRIPT), "--seconds", "2", "--bundle", str(bundle),
        "--state-dir", str(tmp_path / "state"), "--broker-kind", kind,
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"broker: {kind} on mqtt://127.0.0.1:" in out
    assert "graphs kept in INT8" in out  # the copy had none: the demo quantized it
    assert "artifacts trunk int8" in out  # and the daemon ran the INT8 trunk
    sent = re.search(r"results sent = results received: (\d+) = (\d+)  OK", out)
    assert sent is not None, out
    assert int(sent[1]) == int(sent[2]) > 10  # 2 s at 20 fps
    assert "duplicates:    0; malformed: 0; gaps: none" in out
    assert re.search(r"payload: +\d+ bytes on the wire \(msgpack\) vs \d+ bytes as JSON", out), out
    assert not marker.exists(), "the demo imported torch"
