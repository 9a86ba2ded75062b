"""The bundle's self-test: golden frames through the loaded artifacts, against the float model.

The exporter stores a few frames and the float model's raw outputs for them in the bundle
(``selftest/``, listed in the manifest's ``selftest`` section and in ``files``). The runtime
runs those frames through the artifacts it actually loaded (backend, precision) and compares
each head's raw outputs with the expected ones:

- trunk and head both **fp32**: ``max |got - expected| <= rtol * range + atol`` per output,
  ``range`` the spread of the expected tensor (defaults ``rtol=1e-3``, ``atol=1e-5``);
- otherwise (**fp16 / int8** somewhere on the head's path): the cosine similarity of every
  output on every frame ``>= min_cosine``, by default ``min(0.98, agreement - 0.02)`` where
  ``agreement`` is the lowest fidelity the quantization gate recorded for this head on those
  artifacts (0.98 when none is recorded). Classification heads also report their top-1
  agreement (the gate's metric, :mod:`edge_runtime.inference.fidelity`).

The manifest's ``selftest.tolerance`` overrides ``rtol`` / ``atol`` / ``min_cosine`` per head.
Heads the engine did not load are not checked. A bundle without self-test data is *skipped*
(passed, with the reason).

Example::

    with Engine.from_bundle("build/demo_bundle", EngineOptions(precision="int8")) as engine:
        report = check_selftest(engine)          # SelfTestError when a head disagrees
        print(report.summary())

CLI: ``edge-runtime selftest build/demo_bundle --precision int8``
"""

from __future__ import annotations

import logging
import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_runtime.bundle.specs import Artifact, SelfTestSpec
from edge_runtime.errors import BundleError, EdgeRuntimeError
from edge_runtime.inference.fidelity import cosine_similarity, head_fidelity

if TYPE_CHECKING:
    from edge_runtime.inference.engine import Engine

logger = logging.getLogger(__name__)

SELFTEST_DIR = "selftest"
FRAMES_PATH = f"{SELFTEST_DIR}/frames.npy"
EXPECTED_PATH = f"{SELFTEST_DIR}/expected.npz"
DECODED_PATH = f"{SELFTEST_DIR}/expected.json"

#: fp32 bound: ``max |got - expected| <= DEFAULT_RTOL * range + DEFAULT_ATOL``.
DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-5
#: fp16/int8 bound: cosine similarity per output and frame, at most this strict ...
DEFAULT_MIN_COSINE = 0.98
#: ... and this far below the agreement the quantization gate measured.
FIDELITY_MARGIN = 0.02
NO_DATA = "the bundle has no self-test data"


class SelfTestError(BundleError):
    """The self-test failed (a head disagrees beyond its bound) or its data is missing or corrupt."""

    def __init__(self, message: str, report: SelfTestReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class HeadCheck:
    """One head's comparison: ``metric`` (``max_abs_error``: passed when ``value <= bound``;
    ``cosine_similarity``: passed when ``value >= bound``), the loaded head artifact's
    ``precision`` and a one-line ``detail`` (worst output, frames, trunk precision, top-1)."""

    name: str
    passed: bool
    metric: str
    value: float
    bound: float
    precision: str
    detail: str = ""

    def line(self) -> str:
        """``"shape: ok   int8  cosine_similarity 0.9991 >= 0.98 (...)"``."""
        op = "<=" if self.metric == "max_abs_error" else ">="
        verdict = "ok" if self.passed else "FAIL"
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.name}: {verdict} {self.precision} {self.metric} {self.value:.4g} {op} {self.bound:.4g}{detail}"


@dataclass(frozen=True)
class SelfTestReport:
    """The self-test of one engine: ``passed`` when every checked head passed (or when
    ``skipped`` gives the reason nothing was checked); ``heads``: head name -> :class:`HeadCheck`."""

    passed: bool
    skipped: str | None = None
    heads: dict[str, HeadCheck] = field(default_factory=dict)
    frames: int = 0

    def summary(self) -> str:
        """One line per head (or one line saying why the self-test was skipped)."""
        if self.skipped is not None:
            return f"self-test skipped: {self.skipped}"
        return "\n".join(check.line() for check in self.heads.values())

    def failures(self) -> str:
        """The failing heads, their metric, value and bound, in one line."""
        return "; ".join(
            f"head {c.name!r} ({c.precision}): {c.metric} {c.value:.4g}, bound "
            f"{'<=' if c.metric == 'max_abs_error' else '>='} {c.bound:.4g}"
            for c in self.heads.values()
            if not c.passed
        )


def run_selftest(engine: Engine) -> SelfTestReport:
    """Run the bundle's self-test frames through ``engine`` and compare every loaded head.

    Raises :class:`SelfTestError` naming the file when the self-test data is missing or
    corrupt; a bundle without a ``selftest`` section gives a skipped report."""
    spec = engine.bundle.manifest.selftest
    if spec is None:
        return SelfTestReport(passed=True, skipped=NO_DATA)
    root = Path(engine.bundle.root)
    frames = load_frames(root / spec.frames, spec.frames)
    heads = engine.head_names
    manifest = engine.bundle.manifest
    expected = load_expected(
        root / spec.expected, spec.expected, {name: manifest.heads[name].outputs for name in heads}, len(frames)
    )
    got: dict[str, list[np.ndarray]] = {key: [] for key in expected}
    for frame in frames:
        raw = engine.run_graphs(engine.preprocess(frame), heads)
        for name in heads:
            for output in manifest.heads[name].outputs:
                got[f"{name}/{output}"].append(np.array(engine.to_numpy(raw[output]), dtype=np.float32))
    checks: dict[str, HeadCheck] = {}
    trunk = engine.artifacts["trunk"]
    for name in heads:
        entry = manifest.heads[name]
        outputs = {o: (expected[f"{name}/{o}"], np.stack(got[f"{name}/{o}"])) for o in entry.outputs}
        artifact = engine.artifacts[name]
        overrides = spec.tolerance.get(name, {})
        if trunk.precision == "fp32" and artifact.precision == "fp32":
            check = _exact(name, outputs, artifact.precision, overrides, spec.expected)
        else:
            check = _similar(name, outputs, artifact, trunk, overrides, spec.expected)
            if entry.decoder is not None and entry.decoder.type == "classification":
                check = _with_top1(check, engine, name, outputs)
        checks[name] = check
    report = SelfTestReport(passed=all(c.passed for c in checks.values()), heads=checks, frames=len(frames))
    logger.info("self-test on %d frames: %s", len(frames), "passed" if report.passed else report.failures())
    return report


def check_selftest(engine: Engine) -> SelfTestReport:
    """:func:`run_selftest`, raising :class:`SelfTestError` (naming each failing head, its
    metric, value and bound) when a head disagrees; the report otherwise."""
    report = run_selftest(engine)
    if not report.passed:
        raise SelfTestError(
            f"{engine.bundle.root}: self-test failed on {report.frames} frames: {report.failures()}", report
        )
    return report


def load_frames(path: Path, rel: str) -> np.ndarray:
    """The self-test frames: ``(N, H, W, 3) uint8``, N >= 1."""
    try:
        frames = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise SelfTestError(f"{rel}: cannot read the self-test frames: {exc}") from exc
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise SelfTestError(
            f"{rel}: self-test frames must be an (N, H, W, 3) uint8 array, got "
            f"{getattr(frames, 'shape', '?')} {getattr(frames, 'dtype', type(frames).__name__)}"
        )
    if len(frames) == 0:
        raise SelfTestError(f"{rel}: no self-test frames")
    return frames


def load_expected(path: Path, rel: str, outputs: Mapping[str, tuple[str, ...]], count: int) -> dict[str, np.ndarray]:
    """The expected raw outputs of ``outputs`` (head -> output names) as ``{"head/output": (count, ...) float32}``."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ValueError("not an .npz archive")
            stored = set(archive.files)
            found: dict[str, np.ndarray] = {}
            for head, names in outputs.items():
                for name in names:
                    key = f"{head}/{name}"
                    if key not in stored:
                        raise SelfTestError(
                            f"{rel}: no expected output {key!r} for head {head!r} "
                            f"(has: {', '.join(sorted(stored)) or 'none'})"
                        )
                    found[key] = archive[key]
    except SelfTestError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SelfTestError(f"{rel}: cannot read the expected outputs: {exc}") from exc
    for key, value in found.items():
        if value.dtype.kind != "f" or value.ndim < 1 or len(value) != count:
            raise SelfTestError(
                f"{rel}: {key!r} must be float with {count} frames first, got {value.shape} {value.dtype}"
            )
        found[key] = value.astype(np.float32, copy=False)
    return found


def _exact(
    head: str,
    outputs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    precision: str,
    overrides: Mapping[str, float],
    rel: str,
) -> HeadCheck:
    rtol, atol = overrides.get("rtol", DEFAULT_RTOL), overrides.get("atol", DEFAULT_ATOL)
    worst: tuple[float, str, float, float] | None = None  # (error / bound, output, error, bound)
    for name, (ref, got) in outputs.items():
        if ref.shape != got.shape:
            detail = f"{name}: shape {got.shape}, expected {ref.shape} in {rel}"
            return HeadCheck(head, False, "max_abs_error", math.inf, 0.0, precision, detail)
        finite = np.isfinite(ref)
        spread = float(ref[finite].max() - ref[finite].min()) if finite.any() else 0.0
        bound = rtol * spread + atol
        diff = np.abs(got.astype(np.float64) - ref)[finite]
        error = float(diff.max()) if diff.size else 0.0
        if not np.isfinite(diff).all():
            error = math.inf
        ratio = error / bound if bound > 0 else (0.0 if error == 0 else math.inf)
        if worst is None or ratio > worst[0]:
            worst = (ratio, name, error, bound)
    if worst is None:  # the manifest requires at least one output per head
        return HeadCheck(head, False, "max_abs_error", math.inf, 0.0, precision, "no outputs to compare")
    _, name, error, bound = worst
    detail = f"worst output {name}, rtol {rtol:g} of its range + atol {atol:g}"
    return HeadCheck(head, error <= bound, "max_abs_error", error, bound, precision, detail)


def _recorded_agreement(artifact: Artifact, head: str) -> float | None:
    """The agreement the exporter's gate recorded for ``head`` on ``artifact`` (None: none)."""
    fidelity = artifact.fidelity
    if not isinstance(fidelity, Mapping):
        return None
    tasks = fidelity.get("tasks")
    candidates: list[Any] = []
    if isinstance(tasks, Mapping) and isinstance(tasks.get(head), Mapping):
        candidates.append(tasks[head].get("value"))
    candidates += [fidelity.get("agreement"), fidelity.get("value")]
    for value in candidates:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def _similar(
    head: str,
    outputs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    artifact: Artifact,
    trunk: Artifact,
    overrides: Mapping[str, float],
    rel: str,
) -> HeadCheck:
    recorded = [
        value
        for a in (artifact, trunk)
        if a.precision != "fp32"
        for value in [_recorded_agreement(a, head)]
        if value is not None
    ]
    bound = DEFAULT_MIN_COSINE if not recorded else min(DEFAULT_MIN_COSINE, min(recorded) - FIDELITY_MARGIN)
    source = "manifest" if "min_cosine" in overrides else ("gate fidelity" if recorded else "default")
    bound = overrides.get("min_cosine", bound)
    worst = (math.inf, "", -1)
    for name, (ref, got) in outputs.items():
        if ref.shape != got.shape:
            detail = f"{name}: shape {got.shape}, expected {ref.shape} in {rel}"
            return HeadCheck(head, False, "cosine_similarity", 0.0, bound, artifact.precision, detail)
        for index in range(len(ref)):
            broken = not np.isfinite(got[index][np.isfinite(ref[index])]).all()
            value = 0.0 if broken else cosine_similarity(ref[index], got[index])
            if value < worst[0]:
                worst = (value, name, index)
    value, name, index = worst
    detail = f"worst output {name} on frame {index}; trunk {trunk.precision}; bound from {source}"
    return HeadCheck(head, value >= bound, "cosine_similarity", value, bound, artifact.precision, detail)


def _with_top1(
    check: HeadCheck, engine: Engine, head: str, outputs: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> HeadCheck:
    """Add the top-1 agreement of a classification head (reported, not gated) to the detail."""
    entry = engine.bundle.manifest.heads[head]
    count = len(next(iter(outputs.values()))[0])
    reference = [{name: ref[i] for name, (ref, _) in outputs.items()} for i in range(count)]
    candidate = [{name: got[i] for name, (_, got) in outputs.items()} for i in range(count)]
    height, width = engine.bundle.manifest.input.height_width
    try:
        fidelity = head_fidelity(head, entry.decoder, entry.outputs, reference, candidate, (width, height))
    except (ValueError, EdgeRuntimeError) as exc:  # shapes already reported by the check itself
        logger.debug("head %r: no top-1 agreement: %s", head, exc)
        return check
    agree = round(fidelity.value * count)
    return HeadCheck(
        check.name,
        check.passed,
        check.metric,
        check.value,
        check.bound,
        check.precision,
        f"{check.detail}; top-1 agreement {agree}/{count}",
    )


__all__ = [
    "HeadCheck",
    "SelfTestError",
    "SelfTestReport",
    "SelfTestSpec",
    "check_selftest",
    "run_selftest",
]
