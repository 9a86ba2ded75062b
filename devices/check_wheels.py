#!/usr/bin/env python3
"""Check that the device install resolves to aarch64 wheels for Python 3.10 and 3.11.

Reads the base dependencies and the device extras from ``pyproject.toml`` (never a copy of
them), runs ``pip download --only-binary=:all:`` for manylinux aarch64 for each Python version,
prints what was chosen (python -> package -> version -> wheel tag) and checks it is sane:
onnxruntime 1.23.x and numpy 2.2.x on Python 3.10 (JetPack 6), ai-edge-litert 2.x (a resolver
that misses the ``manylinux_2_27`` tag silently falls back to 1.x).

Exits 1 naming each package that has no aarch64 wheel, or each unexpected choice.
Downloads are cached in ``~/.cache/edge-runtime/wheels/cpXY`` so reruns are fast.
The package index comes from pip's own configuration: none is written here.

    python devices/check_wheels.py
    python devices/check_wheels.py --python 3.10 --extras tflite,zstd
    make check-wheels
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DEVICE_EXTRAS = ("tflite", "zstd", "signing", "camera", "images", "metrics")
PYTHONS = ("3.10", "3.11")
# Without manylinux_2_27, ai-edge-litert resolves to an old 1.x release.
PLATFORMS = ("manylinux_2_27_aarch64", "manylinux_2_28_aarch64", "manylinux2014_aarch64")
CACHE = Path.home() / ".cache" / "edge-runtime" / "wheels"
# python version -> package -> required version prefix ("" = any python).
EXPECTED: dict[str, dict[str, str]] = {
    "": {"ai-edge-litert": "2."},
    "3.10": {"onnxruntime": "1.23.", "numpy": "2.2."},
}


@dataclass(frozen=True)
class Wheel:
    """One wheel pip chose: its project name, version and tag (``cp311-cp311-manylinux_..._aarch64``)."""

    name: str
    version: str
    tag: str

    @classmethod
    def from_filename(cls, filename: str) -> Wheel:
        name, version, _build, _tags = parse_wheel_filename(filename)
        # The last three fields keep the compressed tag set (``manylinux_2_27_aarch64.manylinux_2_28_aarch64``).
        tag = "-".join(filename[: -len(".whl")].split("-")[-3:])
        return cls(str(name), str(version), tag)

    @property
    def is_aarch64(self) -> bool:
        return self.tag.endswith("-any") or "aarch64" in self.tag


def device_requirements(pyproject: Path, extras: Sequence[str], python: str) -> list[str]:
    """Base dependencies plus the given extras of ``pyproject``, markers evaluated for ``python``.

    The markers are evaluated for Linux aarch64 CPython ``python`` (e.g. ``tomli`` only below 3.11),
    whatever machine runs this. Raises ``KeyError`` naming an extra that pyproject lacks.
    """
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    missing = [extra for extra in extras if extra not in optional]
    if missing:
        raise KeyError(f"extras not in {pyproject}: {', '.join(missing)} (known: {', '.join(sorted(optional))})")
    env = {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "platform_machine": "aarch64",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
    }
    out: list[str] = []
    for line in [*project.get("dependencies", []), *(dep for extra in extras for dep in optional[extra])]:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        req.marker = None
        if str(req) not in out:
            out.append(str(req))
    return out


_SAVED = re.compile(r"(?:Saved|File was already downloaded)\s+(\S+\.whl)")
_MISSING = re.compile(
    r"(?:No matching distribution found for|Could not find a version that satisfies the requirement)"
    r"\s+([A-Za-z0-9_.\-]+)"
)


def parse_pip_output(text: str) -> tuple[list[Wheel], list[str]]:
    """Wheels pip saved or reused, and the requirements it found no wheel for, from its output."""
    wheels = {Path(m).name: Wheel.from_filename(Path(m).name) for m in _SAVED.findall(text)}
    missing = sorted({str(canonicalize_name(m)) for m in _MISSING.findall(text)})
    return sorted(wheels.values(), key=lambda w: w.name), missing


def download(requirements: Sequence[str], python: str, dest: Path) -> tuple[list[Wheel], list[str], str]:
    """``pip download`` the requirements for aarch64 CPython ``python`` into ``dest``."""
    abi = "cp" + python.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--progress-bar", "off"]
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    cmd += ["--python-version", python, "--implementation", "cp", "--abi", abi, "--dest", str(dest), *requirements]
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    text = proc.stdout + proc.stderr
    wheels, missing = parse_pip_output(text)
    if proc.returncode != 0 and not missing:
        missing = ["(pip failed, see its output)"]
    return wheels, missing, text


def check_expected(python: str, wheels: Sequence[Wheel]) -> list[str]:
    """Problems with what was chosen: unexpected versions, non-aarch64 wheels, expected packages absent."""
    by_name = {str(canonicalize_name(w.name)): w for w in wheels}
    problems = [f"{w.name} {w.version}: wheel {w.tag} is not for aarch64" for w in wheels if not w.is_aarch64]
    for key in ("", python):
        for name, prefix in EXPECTED.get(key, {}).items():
            wheel = by_name.get(name)
            if wheel is None:
                continue  # not requested (extras narrowed on the command line)
            if not wheel.version.startswith(prefix):
                problems.append(f"{name}: got {wheel.version} for Python {python}, expected {prefix}x")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="example: make check-wheels")
    parser.add_argument("--python", action="append", help=f"Python version(s) to check (default: {', '.join(PYTHONS)})")
    parser.add_argument(
        "--extras", default=",".join(DEVICE_EXTRAS), help="comma-separated extras (default: %(default)s)"
    )
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml", help="default: %(default)s")
    parser.add_argument("--cache-dir", type=Path, default=CACHE, help="download cache (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print pip's output")
    args = parser.parse_args(argv)
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]

    failures: list[str] = []
    start_all = time.perf_counter()
    print(f"{'python':<7} {'package':<26} {'version':<12} wheel tag")
    for python in args.python or PYTHONS:
        try:
            requirements = device_requirements(args.pyproject, extras, python)
        except KeyError as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return 2
        start = time.perf_counter()
        wheels, missing, text = download(requirements, python, args.cache_dir / ("cp" + python.replace(".", "")))
        elapsed = time.perf_counter() - start
        if args.verbose or missing:
            print(text, file=sys.stderr)
        for wheel in wheels:
            print(f"{python:<7} {wheel.name:<26} {wheel.version:<12} {wheel.tag}")
        failures += [f"Python {python}: no aarch64 wheel for {name}" for name in missing]
        failures += [f"Python {python}: {problem}" for problem in check_expected(python, wheels)]
        print(f"# Python {python}: {len(wheels)} wheels in {elapsed:.1f} s")
    print(f"# total {time.perf_counter() - start_all:.1f} s (cache: {args.cache_dir})")
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
