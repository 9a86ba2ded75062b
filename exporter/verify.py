"""Check numerically that trunk then heads reproduce the original model.

Every graph is loaded from the exact bytes that will be written, in a real ONNX Runtime
session; each sample input runs through the original model and through trunk → heads
(fed by tensor name), and every original output is compared element-wise.

Example::

    report = verify_split(model, graphs, plan, sample_inputs(model, plan, count=4))
    report.raise_if_failed(tolerance=1e-5)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from edge_runtime.errors import ModelError
from exporter.split import SplitGraphs, SplitPlan

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-5


def make_session(model: onnx.ModelProto | bytes, what: str) -> ort.InferenceSession:
    """A CPU session with thread spinning off (spinning sessions fight each other); ``what`` names it in errors."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    data = model if isinstance(model, bytes) else model.SerializeToString()
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"{what}: onnxruntime {ort.__version__} cannot load it: {exc}") from exc


@dataclass
class OutputCheck:
    """Worst absolute error of one original output over all samples."""

    output: str
    head: str
    max_abs_error: float = 0.0
    max_abs_value: float = 0.0
    finite: bool = True


@dataclass
class VerificationReport:
    """Per-output errors of a split against its original model."""

    samples: int
    checks: dict[str, OutputCheck] = field(default_factory=dict)

    @property
    def max_abs_error(self) -> float:
        """The worst error over every output."""
        return max((c.max_abs_error for c in self.checks.values()), default=0.0)

    def failures(self, tolerance: float) -> list[OutputCheck]:
        """Outputs whose error exceeds ``tolerance`` (or that are not finite where the original was)."""
        return [c for c in self.checks.values() if not c.finite or c.max_abs_error > tolerance]

    def raise_if_failed(self, tolerance: float = DEFAULT_TOLERANCE) -> None:
        """Raise :class:`ModelError` listing every output over ``tolerance``."""
        bad = self.failures(tolerance)
        if bad:
            detail = "; ".join(f"{c.output} (head {c.head}): max abs error {c.max_abs_error:.3g}" for c in bad)
            raise ModelError(
                f"verification failed: trunk + heads do not reproduce the model within {tolerance:g}: "
                f"{detail}. Nothing was written."
            )


def _random_like(shape: Sequence[int], dtype: np.dtype, rng: np.random.Generator, kind: str) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        if kind == "uniform":
            return rng.uniform(-3.0, 3.0, size=shape).astype(dtype)
        return rng.standard_normal(size=shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -128), min(info.max, 255), size=shape, endpoint=True).astype(dtype)


def sample_inputs(
    model: onnx.ModelProto,
    input_shape: Sequence[int],
    *,
    count: int = 4,
    dynamic_batch: bool = False,
    real: np.ndarray | None = None,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Inputs for verification: random normal and uniform tensors (batch 2 too when the
    batch is dynamic), plus up to 8 real preprocessed frames when given."""
    inp = next(i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type))
    rng = np.random.default_rng(seed)
    samples = []
    for k in range(count):
        shape = list(input_shape)
        if dynamic_batch and k == count - 1:
            shape[0] = 2
        kind = "uniform" if k % 2 else "normal"
        samples.append({inp.name: _random_like(shape, dtype, rng, kind)})
    if real is not None:
        for frame in real[:8]:
            samples.append({inp.name: np.ascontiguousarray(frame[None], dtype=dtype)})
    return samples


def verify_split(
    model: onnx.ModelProto | ort.InferenceSession,
    graphs: SplitGraphs,
    plan: SplitPlan,
    samples: Sequence[Mapping[str, np.ndarray]],
    progress: Callable[[int, int], None] | None = None,
) -> VerificationReport:
    """Run ``samples`` through the original (a model or a ready session) and through
    trunk → heads; compare outputs."""
    original = model if isinstance(model, ort.InferenceSession) else make_session(model, "original model")
    trunk = make_session(graphs.trunk, "trunk graph")
    heads = {name: make_session(g, f"head {name!r} graph") for name, g in graphs.heads.items()}
    report = VerificationReport(samples=len(samples))
    for head in plan.heads:
        for out in head.outputs:
            report.checks[out] = OutputCheck(output=out, head=head.name)
    for n, feed in enumerate(samples, start=1):
        expected = dict(zip([o.name for o in original.get_outputs()], original.run(None, dict(feed)), strict=True))
        boundary_names = [graphs.public(b) for b in plan.boundary]
        boundary = dict(zip(boundary_names, trunk.run(boundary_names, dict(feed)), strict=True))
        available = {**feed, **boundary}
        for head in plan.heads:
            head_feed = {graphs.public(name): available[graphs.public(name)] for name in head.inputs}
            got = heads[head.name].run(list(head.outputs), head_feed)
            for name, value in zip(head.outputs, got, strict=True):
                check = report.checks[name]
                want = np.asarray(expected[name])
                value = np.asarray(value)
                if want.shape != value.shape:
                    raise ModelError(
                        f"verification failed: output {name!r} has shape {value.shape} after the split, "
                        f"{want.shape} in the original model"
                    )
                if want.size == 0:
                    continue
                want_f = want.astype(np.float64)
                got_f = value.astype(np.float64)
                finite = np.isfinite(want_f)
                if not np.array_equal(finite, np.isfinite(got_f)):
                    check.finite = False
                if finite.any():
                    err = float(np.max(np.abs(want_f[finite] - got_f[finite])))
                    check.max_abs_error = max(check.max_abs_error, err)
                    check.max_abs_value = max(check.max_abs_value, float(np.max(np.abs(want_f[finite]))))
        if progress is not None:
            progress(n, len(samples))
    return report
