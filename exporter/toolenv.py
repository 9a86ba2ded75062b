"""Virtual environments for the heavy converters, created on demand and reused.

onnx2tf (with TensorFlow), litert-torch and TensorFlow for Keras pin versions of numpy, onnx,
onnxruntime and protobuf that would break the exporter's own environment, so each runs in a
virtualenv of its own, as a subprocess. :func:`ensure_env` creates it the first time (pip
output shown as progress, a few minutes), marks it complete, and reuses it afterwards; a
half-built one (interrupted install) is rebuilt. The cache directory is
``$EDGE_EXPORT_CACHE`` or ``$XDG_CACHE_HOME/edge-runtime`` (``~/.cache/edge-runtime``); each
environment's folder name carries a hash of its requirements, so a change of pins makes a
new one.

Example::

    env = ensure_env("onnx2tf")
    env.run(["-m", "onnx2tf", "-i", "trunk.onnx", "-o", "out"], cwd=workdir)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.errors import EdgeRuntimeError

logger = logging.getLogger("exporter")

CACHE_ENV = "EDGE_EXPORT_CACHE"
MARKER = ".edge-export-complete"


class ToolEnvError(EdgeRuntimeError):
    """A converter environment could not be created, or the converter failed."""


@dataclass(frozen=True)
class ToolSpec:
    """What one converter environment holds: pip requirements, installed in order (each item
    one pip call), and a module whose import proves the install."""

    name: str
    requirements: tuple[tuple[str, ...], ...]
    check_import: str
    purpose: str


#: The converter environments. Versions: onnx2tf pins its whole stack (TensorFlow 2.19,
#: numpy 1.26, onnx 1.19, onnxruntime 1.23, protobuf 4.25); we take its pins as they are.
TOOLS: dict[str, ToolSpec] = {
    "onnx2tf": ToolSpec(
        name="onnx2tf",
        requirements=(("onnx2tf==1.29.24",),),
        check_import="onnx2tf",
        purpose="ONNX -> TFLite conversion",
    ),
    # litert-torch 0.10 accepts torch >=2.4,<2.15 and pins ai-edge-litert <2.4, jax and
    # transformers; torch goes first, pinned, so pip takes the CPU wheel on disk.
    "litert-torch": ToolSpec(
        name="litert-torch",
        requirements=(("torch==2.13.0",), ("litert-torch==0.10.0",)),
        check_import="litert_torch",
        purpose="PyTorch -> TFLite conversion",
    ),
    # tflite2onnx 0.4.1 (the last release) reads .tflite with the `tflite` flatbuffer bindings
    # and writes ONNX opset 11: no TensorFlow (about 140 MB). It declares no pins: these are the
    # versions it was checked with (numpy 2.2 also serves Python 3.10).
    "tflite2onnx": ToolSpec(
        name="tflite2onnx",
        requirements=(
            (
                "numpy==2.2.6",
                "protobuf==7.36.2",
                "ml_dtypes==0.7.0",
                "onnx==1.23.2",
                "flatbuffers==25.12.19",
                "tflite==2.18.0",
                "tflite2onnx==0.4.1",
            ),
        ),
        check_import="tflite2onnx",
        purpose="TFLite -> ONNX import",
    ),
}


def cache_dir() -> Path:
    """Where converter environments live."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-runtime"


def _digest(spec: ToolSpec) -> str:
    text = json.dumps([spec.requirements, sys.version_info[:2]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class ToolEnv:
    """A ready converter environment."""

    spec: ToolSpec
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    def run(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 1800,
        what: str | None = None,
    ) -> str:
        """Run ``python ARGS`` in the environment (its ``bin`` first on PATH); return its output.
        A failure raises :class:`ToolEnvError` with the last lines of the output and the
        command that reproduces it (:meth:`command_line`)."""
        what = what or f"{self.spec.name} {' '.join(args[:3])}"
        environ = {**os.environ, **(env or {})}
        environ["PATH"] = f"{self.bin}{os.pathsep}{environ.get('PATH', '')}"
        environ.pop("PYTHONPATH", None)
        for key in ("VIRTUAL_ENV", "PYTHONHOME"):
            environ.pop(key, None)
        try:
            done = subprocess.run(
                [str(self.python), *args],
                cwd=cwd,
                env=environ,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            output = _text(exc.stdout) + _text(exc.stderr)
            raise self.failure(what, f"no result after {timeout:.0f} s", output, args, cwd, env) from exc
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise self.failure(what, f"failed (exit {done.returncode})", output, args, cwd, env)
        return output

    def command_line(self, args: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None) -> str:
        """The shell command that reruns ``python ARGS`` as :meth:`run` does: the working
        directory, the extra environment, the venv's ``bin`` first on PATH, its python."""
        assignments = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
        path = f'PATH={shlex.quote(str(self.bin))}:"$PATH"'
        command = shlex.join([str(self.python), *map(str, args)])
        unset = "-u PYTHONPATH -u VIRTUAL_ENV -u PYTHONHOME"
        return f"cd {shlex.quote(str(cwd))} && env {unset} {' '.join([*assignments, path])} {command}"

    def failure(
        self,
        what: str,
        problem: str,
        output: str,
        args: Sequence[str],
        cwd: Path,
        env: Mapping[str, str] | None = None,
    ) -> ToolEnvError:
        """The error of a failed run (``problem``: "failed (exit 1)", "wrote no X"…): its last
        :data:`TAIL_LINES` output lines and the command to reproduce it."""
        tail = _tail(output, TAIL_LINES) or "  (no output)"
        return ToolEnvError(
            f"{what} {problem}; its last lines:\n{tail}\nto reproduce it:\n  {self.command_line(args, cwd, env)}"
        )


#: How many of a failed converter run's last output lines its error shows.
TAIL_LINES = 20


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _tail(text: str, lines: int) -> str:
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join("  " + line for line in kept[-lines:])


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_env(name: str) -> ToolEnv:
    """The environment of converter ``name``, created (with progress) when missing."""
    try:
        spec = TOOLS[name]
    except KeyError:
        raise ToolEnvError(f"unknown converter environment {name!r}; known: {', '.join(TOOLS)}") from None
    return ensure_spec_env(spec)


def ensure_spec_env(spec: ToolSpec) -> ToolEnv:
    """The environment holding ``spec`` (a converter's, or another tool's such as the model zoo's
    oracles), created (with progress) when missing, cached like the converters'."""
    root = cache_dir()
    path = root / f"{spec.name}-{_digest(spec)}"
    env = ToolEnv(spec, path)
    with _locked(root / f".{path.name}.lock"):
        if (path / MARKER).exists():
            return env
        if path.exists():
            logger.info("%s: an incomplete environment at %s: rebuilding it", spec.name, path)
            shutil.rmtree(path)
        logger.info(
            "creating the %s environment for %s in %s (once; a few minutes, needs PyPI)", spec.name, spec.purpose, path
        )
        started = time.monotonic()
        try:
            _run_logged([sys.executable, "-m", "venv", str(path)], "python -m venv")
            _run_logged([str(env.python), "-m", "pip", "install", "--upgrade", "pip"], "pip upgrade")
            for group in spec.requirements:
                _run_logged([str(env.python), "-m", "pip", "install", *group], f"pip install {' '.join(group)}")
            _run_logged([str(env.python), "-c", f"import {spec.check_import}"], f"import {spec.check_import}")
        except ToolEnvError:
            shutil.rmtree(path, ignore_errors=True)
            raise
        (path / MARKER).write_text(json.dumps({"requirements": spec.requirements, "created": time.time()}) + "\n")
        logger.info("%s environment ready in %.0f s", spec.name, time.monotonic() - started)
    return env


def _run_logged(command: Sequence[str], what: str) -> None:
    """Run an install step, echoing its progress lines (pip's "Collecting", "Installing")."""
    tail: deque[str] = deque(maxlen=15)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if not line:
                continue
            tail.append(line)
            if line.startswith(("Collecting ", "Installing collected", "Successfully installed")):
                logger.info("      %s", line[:160])
        code = proc.wait()
    if code != 0:
        lines = "\n".join("  " + line for line in tail)
        raise ToolEnvError(
            f"{what} failed (exit {code}); check the network to PyPI and disk space. Last lines:\n{lines}"
        )


__all__ = ["TOOLS", "ToolEnv", "ToolEnvError", "ToolSpec", "cache_dir", "ensure_env"]
