"""Out-of-range values (issue 23) on the exporter side: unwritable ``-o`` paths, ``--tolerance``
and ``--min-agreement`` outside their range, and non-finite input-spec preprocessing, refused
with one line naming the flag, file or key (``edge-export`` exits 2), or a clear exception from
the API."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.bundle.specs import InputSpec
from edge_runtime.errors import BundleError, ConfigError
from exporter.chain import ExportOptions
from exporter.pipeline import SplitOptions
from exporter.quantize_options import QuantizeOptions
from exporter.tflite import TfliteOptions
from tests.cli_errors import one_error_line

ROOT = Path(__file__).resolve().parent.parent
EXPORT = [sys.executable, "-m", "exporter.cli"]
MODEL = ROOT / "examples" / "demo_multitask.onnx"
INPUT = ROOT / "examples" / "demo_input.toml"
HEADS = ROOT / "examples" / "demo_heads.toml"


def export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXPORT, *args], capture_output=True, text=True, timeout=300, check=False)


def split(output: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    return export("split", str(MODEL), "-o", str(output), "--input-spec", str(INPUT), "--head-spec", str(HEADS),
                  "--no-selftest", *args)  # fmt: skip


# -- 2. unwritable -o ----------------------------------------------------------------------------------


def test_split_below_a_file_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    out = tmp_path / "afile" / "bundle"
    line = one_error_line(split(out))
    assert f"{out}: cannot write there: {tmp_path / 'afile'} is a file, not a directory" in line


def test_split_into_a_read_only_directory_names_the_path(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        line = one_error_line(split(folder / "bundle"))
    finally:
        folder.chmod(0o755)
    assert f"{folder / 'bundle'}: cannot write there: {folder} is not writable" in line


def test_split_where_the_parent_cannot_be_made_names_the_path() -> None:
    out = Path("/sys/edge-runtime-q23/bundle")  # sysfs: no directory can be made there
    if Path("/sys").is_dir() is False or os.access("/sys", os.W_OK) is False:
        expected = "/sys is not writable"
    else:
        expected = "cannot write there: Operation not permitted (/sys/edge-runtime-q23)"
    line = one_error_line(split(out))
    assert str(out) in line and expected in line, line


def test_quantize_output_below_a_file_names_the_path(demo_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    out = tmp_path / "afile" / "int8"
    line = one_error_line(export("quantize", str(demo_bundle), "-o", str(out), "--limit", "4"))
    assert f"{out}: cannot write there: {tmp_path / 'afile'} is a file, not a directory" in line


# -- 4. --tolerance, --min-agreement -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--tolerance", "nan"], "--tolerance must be a finite number"),
        (["--tolerance", "inf"], "--tolerance must be a finite number"),
        (["--min-agreement", "5"], "--min-agreement must be in (0, 1], got 5.0"),
        (["--min-agreement", "nan"], "--min-agreement must be in (0, 1], got nan"),
        (["--min-agreement", "inf"], "--min-agreement must be in (0, 1], got inf"),
    ],
)
def test_split_refuses_out_of_range_gates(tmp_path: Path, flags: list[str], words: str) -> None:
    assert words in one_error_line(split(tmp_path / "bundle", *flags))
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("command", ["quantize", "convert"])
@pytest.mark.parametrize("value", ["5", "nan", "inf"])
def test_quantize_and_convert_refuse_out_of_range_min_agreement(demo_bundle: Path, command: str, value: str) -> None:
    assert "--min-agreement must be in (0, 1]" in one_error_line(
        export(command, str(demo_bundle), "--min-agreement", value)
    )


def test_the_api_options_check_the_same_ranges() -> None:
    for make in (
        lambda v: ExportOptions(min_agreement=v),
        lambda v: QuantizeOptions(min_agreement=v),
        lambda v: TfliteOptions(min_agreement=v),
    ):
        for value in (math.nan, 5.0, math.inf, 0.0):
            with pytest.raises(ConfigError, match=r"--min-agreement must be in \(0, 1\]"):
                make(value)
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ConfigError, match="--tolerance must be a finite number"):
            SplitOptions(tolerance=value)


# -- 5. input spec preprocessing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("scale = nan", "'scale' must be finite, got nan"),
        ("scale = inf", "'scale' must be finite, got inf"),
        ("scale = 0", "'scale' must not be 0"),
        ("mean = [0.0, nan, 0.0]", "'mean' must be finite"),
        ("std = [1.0, 1.0, -inf]", "'std' must be finite"),
        ("std = [1.0, 0.0, 1.0]", "'std' must not contain 0"),
    ],
)
def test_split_refuses_non_finite_preprocessing(tmp_path: Path, line: str, words: str) -> None:
    key = line.split(" ")[0]
    text = "".join(f"{row}\n" for row in INPUT.read_text(encoding="utf-8").splitlines() if not row.startswith(key))
    spec = tmp_path / "input.toml"
    spec.write_text(text + line + "\n", encoding="utf-8")
    proc = export("split", str(MODEL), "-o", str(tmp_path / "b"), "--input-spec", str(spec), "--no-selftest")
    message = one_error_line(proc)
    assert f"{spec}" in message and words in message, message


def test_a_manifest_with_non_finite_preprocessing_is_refused() -> None:
    data = {"name": "image", "shape": [1, 3, 8, 8], "std": [1.0, math.nan, 1.0]}
    with pytest.raises(BundleError, match=r"manifest.json: input: 'std' must be finite"):
        InputSpec.from_mapping(data, "manifest.json: input")
