"""The bundle's self-test: golden frames through the loaded artifacts, against the float model.

The exporter stores a few frames (``selftest/frame_<i>.png``; older bundles one ``frames.npy``)
and the float model's raw outputs for them in the bundle, listed in the manifest's ``selftest``
section and in ``files``. When the bundle was quantized or converted with real calibration
frames, the self-test frames are frames the fidelity gate held back from calibration and
measured (``source: calibration``); otherwise they are synthetic. The runtime runs those frames
through the artifacts it actually loaded (backend, precision) and compares each head with the
float model:

- trunk and head both **fp32**: the raw outputs, ``max |got - expected| <= rtol * range + atol``
  per output, ``range`` the spread of the expected tensor (defaults ``rtol=1e-3``, ``atol=1e-5``);
- otherwise (**fp16 / int8** somewhere on the head's path), with **the gate's own metric** on
  the *decoded* results (:func:`edge_runtime.inference.fidelity.head_fidelity`): detections
  matched at IoU >= 0.9 with the same class (two empty results agree), top-1 class agreement,
  pixel agreement, landmark/regression error relative to the range; the bound is the agreement
  the exporter measured with the same artifacts on the same frames (``selftest.agreement``),
  less :data:`DECODED_MARGIN`, else the gate's threshold less it. A check with nothing to compare
  (no detection in the float model nor here, on every frame) passes and says so: a vacuous
  pass is visible in the report.
- raw and embedding heads (no decoded metric): the cosine similarity of every output on every
  frame ``>= min_cosine`` (by default ``min(0.98, agreement - 0.02)``), leaving out an output
  whose float values all lie below what the INT8 artifact can represent there (half its output
  quantization step, recorded by the exporter as ``output_steps``): INT8 rounds such an output
  to 0, and a cosine of it says nothing; the report names it. An output of at most 4 values per
  frame (a presence logit: the cosine of one value is its sign) is compared by absolute error
  instead (:func:`~edge_runtime.inference.fidelity.small_output_error`, metric ``max_abs_error``).

The manifest's ``selftest.tolerance`` overrides ``rtol`` / ``atol`` / ``min_cosine`` /
``min_agreement`` per head. Heads the engine did not load are not checked. A bundle without
self-test data is *skipped* (passed, with the reason).

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

from edge_runtime.bundle.selftest_spec import SelfTestSpec
from edge_runtime.bundle.specs import Artifact, DecoderSpec
from edge_runtime.errors import BundleError, EdgeRuntimeError
from edge_runtime.frames.preprocess import Preprocessor
from edge_runtime.inference.fidelity import SMALL_OUTPUT, cosine_similarity, head_fidelity, small_output_error

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
#: Decoded metrics: pass at this much below the agreement the exporter measured on the same
#: frames with the same artifacts (one borderline detection may flip on another CPU; a broken
#: artifact agrees on next to nothing).
DECODED_MARGIN = 0.1
#: Decoded metrics of bundles that recorded nothing on their self-test frames: the gate's threshold.
DEFAULT_MIN_AGREEMENT = 0.9
#: The preprocessing backend of the self-test, where the frames are made and where they are checked.
SELFTEST_RESIZE = "numpy"
#: Decoder types whose self-test compares raw tensors by cosine (no decoded metric).
RAW_TYPES = ("raw", "embedding")
NO_DATA = "the bundle has no self-test data"


class SelfTestError(BundleError):
    """The self-test failed (a head disagrees beyond its bound) or its data is missing or corrupt."""

    def __init__(self, message: str, report: SelfTestReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class HeadCheck:
    """One head's comparison: ``metric`` (``max_abs_error``: passed when ``value <= bound``; any
    other metric, an agreement: passed when ``value >= bound``), the loaded head artifact's
    ``precision``, a one-line ``detail`` (worst output, frames, trunk precision, where the bound
    comes from) and ``vacuous`` when there was nothing to compare."""

    name: str
    passed: bool
    metric: str
    value: float
    bound: float
    precision: str
    detail: str = ""
    vacuous: bool = False

    def line(self) -> str:
        """``"shape: ok   int8  top1_agreement 1 >= 0.89 (...)"``."""
        op = "<=" if self.metric == "max_abs_error" else ">="
        verdict = "ok" if self.passed else "FAIL"
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.name}: {verdict} {self.precision} {self.metric} {self.value:.4g} {op} {self.bound:.4g}{detail}"


@dataclass(frozen=True)
class SelfTestReport:
    """The self-test of one engine: ``passed`` when every checked head passed (or when
    ``skipped`` gives the reason nothing was checked); ``heads``: head name -> :class:`HeadCheck`;
    ``source``: where the frames came from (``calibration`` or ``synthetic``)."""

    passed: bool
    skipped: str | None = None
    heads: dict[str, HeadCheck] = field(default_factory=dict)
    frames: int = 0
    source: str = "synthetic"

    def summary(self) -> str:
        """One line per head (or one line saying why the self-test was skipped)."""
        if self.skipped is not None:
            return f"self-test skipped: {self.skipped}"
        return "\n".join(check.line() for check in self.heads.values())

    @property
    def vacuous(self) -> list[str]:
        """The heads whose check had nothing to compare."""
        return [name for name, check in self.heads.items() if check.vacuous]

    def failures(self) -> str:
        """The failing heads, their metric, value and bound, in one line."""
        return "; ".join(
            f"head {c.name!r} ({c.precision}): {c.metric} {c.value:.4g}, bound "
            f"{'<=' if c.metric == 'max_abs_error' else '>='} {c.bound:.4g}"
            for c in self.heads.values()
            if not c.passed
        )


def path_key(trunk: Artifact, head: Artifact) -> str:
    """How the manifest's ``selftest.agreement`` names the artifacts a head ran on:
    ``"onnx/int8+onnx/fp32"`` (trunk, then head: format/precision)."""
    return f"{trunk.format}/{trunk.precision}+{head.format}/{head.precision}"


def run_selftest(engine: Engine) -> SelfTestReport:
    """Run the bundle's self-test frames through ``engine`` and compare every loaded head.

    Raises :class:`SelfTestError` naming the file when the self-test data is missing or
    corrupt; a bundle without a ``selftest`` section gives a skipped report."""
    spec = engine.bundle.manifest.selftest
    if spec is None:
        return SelfTestReport(passed=True, skipped=NO_DATA)
    root = Path(engine.bundle.root)
    frames = load_frames(root, spec)
    manifest = engine.bundle.manifest
    expected = load_expected(
        root / spec.expected,
        spec.expected,
        {name: manifest.heads[name].outputs for name in engine.head_names},
        len(frames),
    )
    checks = compare_heads(engine, frames, expected, spec)
    report = SelfTestReport(
        passed=all(c.passed for c in checks.values()), heads=checks, frames=len(frames), source=spec.source
    )
    outcome = "passed" if report.passed else report.failures()
    if report.vacuous:
        outcome += f" (nothing to compare for {', '.join(report.vacuous)})"
    logger.info("self-test on %d %s frames: %s", len(frames), spec.source, outcome)
    return report


def compare_heads(
    engine: Engine,
    frames: list[np.ndarray],
    expected: Mapping[str, np.ndarray],
    spec: SelfTestSpec,
) -> dict[str, HeadCheck]:
    """Run ``frames`` through ``engine`` and check each loaded head against ``expected``
    (``"head/output"`` -> ``(frames, *shape)`` float outputs). The exporter calls this too, to
    record what the device must reproduce."""
    manifest = engine.bundle.manifest
    heads = engine.head_names
    # numpy's resize on both sides: the expected outputs must not depend on whether OpenCV is
    # installed here or where the bundle was made (their bilinear resizes differ by a grey level)
    preprocess = Preprocessor(manifest.input, backend=SELFTEST_RESIZE)
    got: dict[str, list[np.ndarray]] = {f"{name}/{o}": [] for name in heads for o in manifest.heads[name].outputs}
    for frame in frames:
        raw = engine.run_graphs(preprocess(frame)[0], heads)
        for name in heads:
            for output in manifest.heads[name].outputs:
                got[f"{name}/{output}"].append(np.array(engine.to_numpy(raw[output]), dtype=np.float32))
    checks: dict[str, HeadCheck] = {}
    trunk = engine.artifacts["trunk"]
    height, width = manifest.input.height_width
    for name in heads:
        entry = manifest.heads[name]
        outputs = {o: (expected[f"{name}/{o}"], np.stack(got[f"{name}/{o}"])) for o in entry.outputs}
        artifact = engine.artifacts[name]
        overrides = spec.tolerance.get(name, {})
        kind = entry.decoder.type if entry.decoder is not None else "raw"
        if trunk.precision == "fp32" and artifact.precision == "fp32":
            checks[name] = _exact(name, outputs, artifact.precision, overrides, spec.expected)
        elif kind in RAW_TYPES:
            checks[name] = _similar(name, outputs, artifact, trunk, overrides, spec.expected)
        else:
            recorded = spec.agreement.get(name, {}).get(path_key(trunk, artifact))
            checks[name] = _decoded(
                name, entry.decoder, entry.outputs, outputs, (artifact, trunk), (width, height), overrides, recorded
            )
    return checks


def check_selftest(engine: Engine) -> SelfTestReport:
    """:func:`run_selftest`, raising :class:`SelfTestError` (naming each failing head, its
    metric, value and bound) when a head disagrees; the report otherwise."""
    report = run_selftest(engine)
    if not report.passed:
        raise SelfTestError(
            f"{engine.bundle.root}: self-test failed on {report.frames} {report.source} frames: {report.failures()}",
            report,
        )
    return report


def load_frames(root: Path, spec: SelfTestSpec) -> list[np.ndarray]:
    """The self-test frames, each ``(H, W, 3) uint8`` RGB: the PNG files (read with numpy and
    zlib only), or the ``.npy`` of older bundles."""
    if isinstance(spec.frames, tuple):
        from edge_runtime.frames.png import decode_png

        frames = []
        for rel in spec.frames:
            try:
                data = (root / rel).read_bytes()
            except OSError as exc:
                raise SelfTestError(f"{rel}: cannot read the self-test frame: {exc.strerror or exc}") from exc
            try:
                frames.append(decode_png(data, rel))
            except EdgeRuntimeError as exc:
                raise SelfTestError(f"self-test frame {exc}") from exc
        return frames
    rel = spec.frames
    try:
        array = np.load(root / rel, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise SelfTestError(f"{rel}: cannot read the self-test frames: {exc}") from exc
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise SelfTestError(
            f"{rel}: self-test frames must be an (N, H, W, 3) uint8 array, got "
            f"{getattr(array, 'shape', '?')} {getattr(array, 'dtype', type(array).__name__)}"
        )
    if len(array) == 0:
        raise SelfTestError(f"{rel}: no self-test frames")
    return list(array)


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


def _output_step(artifact: Artifact, name: str) -> float | None:
    """The INT8 output quantization step of output ``name`` the exporter recorded, else ``None``."""
    steps = artifact.extra.get("output_steps") if artifact.precision == "int8" else None
    step = steps.get(name) if isinstance(steps, Mapping) else None
    if not isinstance(step, (int, float)) or isinstance(step, bool) or not step > 0:
        return None
    return float(step)


def _below_int8(artifact: Artifact, name: str, ref: np.ndarray) -> float | None:
    """The INT8 output step of output ``name`` when every float value of it lies below half of it
    (INT8 can only give 0 there), else ``None``."""
    step = _output_step(artifact, name)
    if step is None:
        return None
    finite = ref[np.isfinite(ref)]
    peak = float(np.abs(finite).max()) if finite.size else 0.0
    return float(step) if peak < step / 2 else None


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
    skipped: list[str] = []
    small: list[str] = []
    for name, (ref, got) in outputs.items():
        if ref.shape != got.shape:
            detail = f"{name}: shape {got.shape}, expected {ref.shape} in {rel}"
            return HeadCheck(head, False, "cosine_similarity", 0.0, bound, artifact.precision, detail)
        if ref[0].size <= SMALL_OUTPUT:  # a cosine of one value is its sign: compared by |error|
            error = small_output_error(ref, got, _output_step(artifact, name))
            if not error.passed:
                detail = (
                    f"output {name} ({ref[0].size} value(s)) on frame {error.sample}: |error| over {error.why}; "
                    f"trunk {trunk.precision}"
                )
                return HeadCheck(head, False, "max_abs_error", error.error, error.bound, artifact.precision, detail)
            small.append(f"{name} |error| {error.error:.3g} <= {error.bound:.3g} ({error.why})")
            continue
        step = _below_int8(artifact, name, ref)
        if step is not None:
            skipped.append(f"{name} (float values below half the INT8 step {step:.3g}: INT8 gives 0 there)")
            continue
        for index in range(len(ref)):
            broken = not np.isfinite(got[index][np.isfinite(ref[index])]).all()
            value = 0.0 if broken else cosine_similarity(ref[index], got[index])
            if value < worst[0]:
                worst = (value, name, index)
    value, name, index = worst
    left_out = f"; left out {', '.join(skipped)}" if skipped else ""
    left_out += f"; small outputs {', '.join(small)}" if small else ""
    if not name and small:  # only small outputs, all within their bounds
        return HeadCheck(head, True, "cosine_similarity", 1.0, bound, artifact.precision, left_out[2:])
    if not name:  # every output left out: nothing to compare
        detail = f"nothing to compare{left_out}"
        return HeadCheck(head, True, "cosine_similarity", 1.0, bound, artifact.precision, detail, vacuous=True)
    detail = f"worst output {name} on frame {index}; trunk {trunk.precision}; bound from {source}{left_out}"
    return HeadCheck(head, value >= bound, "cosine_similarity", value, bound, artifact.precision, detail)


def _gate_threshold(artifacts: tuple[Artifact, ...]) -> float | None:
    """The lowest ``min_agreement`` the gate applied to the quantized or converted artifacts."""
    found = [
        float(a.fidelity["min_agreement"])
        for a in artifacts
        if a.precision != "fp32" or a.format != "onnx"
        if isinstance(a.fidelity, Mapping) and isinstance(a.fidelity.get("min_agreement"), (int, float))
    ]
    return min(found) if found else None


def _decoded(
    head: str,
    decoder: DecoderSpec | None,
    names: tuple[str, ...],
    outputs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    artifacts: tuple[Artifact, Artifact],
    input_size: tuple[int, int],
    overrides: Mapping[str, float],
    recorded: float | None,
) -> HeadCheck:
    """The gate's metric on the decoded results of every frame (head artifact, trunk artifact)."""
    artifact, trunk = artifacts
    count = len(next(iter(outputs.values()))[0])
    reference = [{name: ref[i] for name, (ref, _) in outputs.items()} for i in range(count)]
    candidate = [{name: got[i] for name, (_, got) in outputs.items()} for i in range(count)]
    for name, (ref, got) in outputs.items():
        if ref.shape != got.shape:
            detail = f"{name}: shape {got.shape}, expected {ref.shape}"
            return HeadCheck(head, False, "agreement", 0.0, 1.0, artifact.precision, detail)
    fidelity = head_fidelity(head, decoder, names, reference, candidate, input_size)
    gate = _gate_threshold(artifacts)
    if "min_agreement" in overrides:
        bound, source = overrides["min_agreement"], "manifest"
    elif recorded is not None:
        bound, source = max(0.0, recorded - DECODED_MARGIN), f"{recorded:.4g} measured on these frames at export"
    elif gate is not None:
        bound, source = max(0.0, gate - DECODED_MARGIN), f"gate threshold {gate:g}"
    else:
        bound, source = DEFAULT_MIN_AGREEMENT - DECODED_MARGIN, "default"
    parts = [f"trunk {trunk.precision}", f"bound from {source} - {DECODED_MARGIN:g}"]
    vacuous = False
    measured = fidelity.detail
    if "reference_detections" in measured:
        found, here = measured["reference_detections"], measured["candidate_detections"]
        if found == 0 and here == 0:
            vacuous = True
            parts.insert(0, f"nothing to compare: no detections in the float model nor here on {count} frames")
        else:
            parts.insert(0, f"{measured['matched']}/{found} float detections matched, {measured['extra']} extra")
    elif "disagreements" in measured:
        parts.insert(0, f"{count - measured['disagreements']}/{count} frames agree")
    if "min_agreement" in overrides:
        parts[-1] = "bound from manifest"
    return HeadCheck(
        head, fidelity.value >= bound, fidelity.metric, fidelity.value, bound, artifact.precision, "; ".join(parts),
        vacuous,
    )  # fmt: skip


__all__ = [
    "DECODED_MARGIN",
    "SELFTEST_RESIZE",
    "HeadCheck",
    "SelfTestError",
    "SelfTestReport",
    "SelfTestSpec",
    "check_selftest",
    "compare_heads",
    "load_frames",
    "path_key",
    "run_selftest",
]
