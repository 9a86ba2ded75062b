"""Build the bundles the runtime tests read, once, with the exporter: ``python -m tests.fixtures DIR``
(``make test-fixtures`` writes ``build/test-fixtures``).

The runtime tests then run where only the device install is (``make test-device``: no onnx, no
exporter dependencies): ``tests/conftest.py`` reads the bundles from ``$EDGE_TEST_FIXTURES``
(default ``build/test-fixtures``) and builds them through the exporter only where they are missing
or stale. ``inputs.json`` records the sha256 of every input file, so a changed demo model or spec
is noticed, and of the code that writes bundles (the exporter, the bundle contract, the self-test),
so a bundle written by older code is rebuilt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DEMO_MODEL = EXAMPLES / "demo_multitask.onnx"
DEMO_INPUT_SPEC = EXAMPLES / "demo_input.toml"
DEMO_HEAD_SPEC = EXAMPLES / "demo_heads.toml"
DEMO_INPUTS = (DEMO_MODEL, DEMO_INPUT_SPEC, DEMO_HEAD_SPEC)
#: The code a bundle's contents depend on: a change rebuilds the fixtures.
WRITER_CODE = ("exporter/**/*.py", "edge_runtime/bundle/*.py", "edge_runtime/trust/selftest.py")
INPUTS_FILE = "inputs.json"
DEMO_BUNDLE = "demo_bundle"
#: The demo bundle with INT8 ONNX graphs beside the FP32 ones (quantized on generated frames).
DEMO_INT8_BUNDLE = "demo_bundle_int8"


def input_digests() -> dict[str, str]:
    """The sha256 of each file the fixtures are built from, keyed by its path in the repository."""
    code = sorted({p for pattern in WRITER_CODE for p in ROOT.glob(pattern)})
    return {p.relative_to(ROOT).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in (*DEMO_INPUTS, *code)}


def fresh_demo_bundle(fixtures: Path, name: str = DEMO_BUNDLE) -> Path | None:
    """``fixtures/<name>`` (the demo bundle, or :data:`DEMO_INT8_BUNDLE`) when it was built from
    the current inputs, else None."""
    bundle = fixtures / name
    try:
        recorded = json.loads((fixtures / INPUTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if recorded != input_digests() or not (bundle / "manifest.json").is_file():
        return None
    return bundle


def split_demo(target: Path) -> Path:
    """Split the demo model with its specs into ``target`` (the exporter, so onnx, is needed here)."""
    from exporter.pipeline import SplitOptions, split_model

    result = split_model(DEMO_MODEL, target, SplitOptions(input_spec=DEMO_INPUT_SPEC, head_spec=DEMO_HEAD_SPEC))
    return result.bundle_dir


def quantize_demo(bundle: Path, target: Path) -> Path:
    """The demo bundle with INT8 graphs added, in ``target`` (the exporter, so onnx, is needed here)."""
    from exporter.quantize import QuantizeOptions, quantize_bundle

    return quantize_bundle(bundle, target, QuantizeOptions(calib="generated", precision="int8")).bundle_dir


def build(fixtures: Path) -> Path:
    """Write every fixture under ``fixtures`` (replacing what is there) and return the demo bundle."""
    fixtures.mkdir(parents=True, exist_ok=True)
    (fixtures / INPUTS_FILE).unlink(missing_ok=True)
    bundle = fixtures / DEMO_BUNDLE
    for folder in (bundle, fixtures / DEMO_INT8_BUNDLE):
        if folder.exists():
            shutil.rmtree(folder)
    split_demo(bundle)
    quantize_demo(bundle, fixtures / DEMO_INT8_BUNDLE)
    # Written last: a half-built folder is never taken for a fresh one.
    (fixtures / INPUTS_FILE).write_text(json.dumps(input_digests(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return bundle


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m tests.fixtures DIR``."""
    parser = argparse.ArgumentParser(prog="python -m tests.fixtures", description=__doc__.splitlines()[0])
    parser.add_argument("fixtures", type=Path, help="folder to write (e.g. build/test-fixtures)")
    args = parser.parse_args(argv)
    bundle = build(args.fixtures)
    print(f"test fixtures: {bundle}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
