"""``make test-device``: run the runtime tests in the device virtualenv and fail when fewer ran than
the main virtualenv collects.

``python -m tests.device_run --device-python .venv-device/bin/python --fixtures build/test-fixtures``
(run with the main virtualenv's Python, which has onnx): collects the runtime tests here
(``-m "not exporter and not slow"``), runs them with the device Python (no onnx) and compares its
summary line: no failure or error, and at most ``--max-skips`` runtime tests not passed (skipped for
an extra the device install leaves out, or not collected because a whole module skipped).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

RUNTIME_TESTS = "not exporter and not slow"
# The default device install (tflite, zstd, signing: devices/install-device.sh) leaves out camera
# (OpenCV: 129 tests skip), images (Pillow: test_images.py and test_preprocess_antialias.py skip
# as modules, 12 + 23 tests, and 27 PNG and pad-first tests that compare with Pillow skip) and
# metrics (prometheus-client: test_metrics.py skips as one, 11 tests), plus 2 more: 205 measured;
# 215 leaves a little room, a broken device install loses far more.
MAX_SKIPS = 215


def summary_counts(output: str) -> dict[str, int]:
    """The counts of pytest's last summary line (``3 failed, 895 passed, 114 skipped in 73.36s``)."""
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error|skipped)", line)]
    counts: dict[str, int] = {}
    for number, word in re.findall(r"(\d+) (\w+)", lines[-1] if lines else ""):
        counts[word.rstrip("s") if word in {"errors", "warnings"} else word] = int(number)
    return counts


def collected_runtime_tests(python: str) -> int:
    """How many runtime tests ``python`` (the main virtualenv, with onnx) collects."""
    done = subprocess.run(
        [python, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", RUNTIME_TESTS],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"^(\d+)(?:/\d+)? tests? collected", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        sys.exit(f"collecting the runtime tests failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m tests.device_run", description=__doc__.splitlines()[0])
    parser.add_argument("--device-python", required=True, help="the device virtualenv's python")
    parser.add_argument("--fixtures", type=Path, required=True, help="what `make test-fixtures` wrote")
    parser.add_argument("--max-skips", type=int, default=MAX_SKIPS, help=f"default {MAX_SKIPS}")
    args = parser.parse_args(argv)

    if subprocess.run([args.device_python, "-c", "import onnx"], capture_output=True, check=False).returncode == 0:
        sys.exit(f"{args.device_python} can import onnx: the device virtualenv must not have it")
    expected = collected_runtime_tests(sys.executable)
    env = {**os.environ, "EDGE_TEST_FIXTURES": str(args.fixtures.resolve())}
    command = [args.device_python, "-m", "pytest", "-p", "no:cacheprovider", "-m", RUNTIME_TESTS]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        output = []
        for line in proc.stdout:
            sys.stdout.write(line)
            output.append(line)
    counts = summary_counts("".join(output))
    passed, skipped = counts.get("passed", 0), counts.get("skipped", 0)
    print(f"test-device: {passed} passed, {skipped} skipped of {expected} runtime tests collected in the main venv")
    if proc.returncode != 0 or counts.get("failed", 0) or counts.get("error", 0):
        print(f"test-device: FAILED (pytest exit {proc.returncode})")
        return 1
    if passed < expected - args.max_skips:
        print(f"test-device: FAILED: {expected - passed} did not pass (at most {args.max_skips} may skip)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
