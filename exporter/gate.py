"""The per-task fidelity gate of ``quantize``, ``convert --to tflite`` and the Keras frontend.

A candidate graph (INT8 / FP16 ONNX, FP32 / INT8 TFLite) is run on frames held back from
calibration; each task's outputs are compared with the float model's by
:func:`exporter.fidelity.head_fidelity`, and the graph is kept only when its *lowest* agreement
reaches ``min_agreement``. A trunk is judged by every task, a head by its own.

The gate must have something to measure: a detection task is measured on the float model's
detections, and with none a candidate that finds nothing "agrees"; with two, agreement is 0, 0.5
or 1. Where the float model finds fewer than :data:`MIN_DETECTIONS` on the held-back frames,
:func:`build_gate` measures on the calibration frames too (said in the report: optimistic at
INT8, which saw them); where even all frames show fewer, the task is *blind*: a quantized
candidate it judges is rejected, and a float one (an FP32 / FP16 conversion) is judged on the
task's raw outputs instead (1 - error relative to each output's range, the regression metric) —
unless the caller keeps unmeasured candidates on purpose (an experiment: ``--keep-unmeasured``),
which is then warned about and recorded.

* :class:`Gate` holds the float reference per head and the threshold: :meth:`Gate.fidelity`
  measures one task, :meth:`Gate.decide` records the measurement on a decision and accepts or
  rejects it (a :class:`Verdict`);
* :class:`GateDecision` is one graph at one precision (commands subclass it for their own
  fields): :meth:`~GateDecision.report_row` is its row in ``quantization.json`` /
  ``tflite.json``, :meth:`~GateDecision.artifact_fidelity` the ``fidelity`` written on its
  manifest artifact; :func:`report_json` writes the report file.

Example::

    gate = Gate.for_manifest(manifest, reference, min_agreement=0.99)  # reference: head -> float outputs
    decision = GateDecision("trunk", "int8", "trunk.int8.onnx")
    verdict = gate.decide(decision, {h: gate.fidelity(h, outputs[h], "int8") for h in manifest.heads})
    decision.reason = verdict.reason("not written")
    files["quantization.json"] = report_json({"precision": "int8"}, [decision])
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from edge_runtime.bundle.manifest import Manifest
from edge_runtime.bundle.specs import DecoderSpec, InputSpec
from exporter.fidelity import Fidelity, Samples, head_fidelity

logger = logging.getLogger(__name__)

#: Decoder types measured on matched detections (the gate can only measure what the float model finds).
DETECTION_TYPES = ("detection", "grid", "ssd")
#: The fewest float detections a detection task's agreement is judged on (fewer: not evidence).
MIN_DETECTIONS = 10
#: Candidate precisions a blind detection task still judges, on its raw outputs: a float graph
#: that reproduces every raw value reproduces every detection; a quantized one may not.
RAW_OUTPUT_PRECISIONS = ("fp32", "fp16")
_RAW_OUTPUTS = DecoderSpec("regression", {})


def input_size(spec: InputSpec) -> tuple[int, int]:
    """``(width, height)`` of the model input: the geometry the fidelity metrics decode at."""
    height, width = spec.height_width
    return int(width), int(height)


@dataclass(frozen=True)
class Task:
    """What the gate needs of one head: its decoder (None: raw outputs) and its output names."""

    decoder: DecoderSpec | None
    outputs: tuple[str, ...]


def tasks_of(manifest: Manifest) -> dict[str, Task]:
    """Each head of a bundle as the gate sees it (decoder and outputs from the manifest)."""
    return {name: Task(entry.decoder, tuple(entry.outputs)) for name, entry in manifest.heads.items()}


@dataclass(frozen=True)
class Verdict:
    """The gate's answer for one candidate: accepted or not, the lowest agreement over its tasks
    (1.0 with none) and the tasks below the threshold."""

    accepted: bool
    lowest: float
    min_agreement: float
    failing: tuple[tuple[str, Fidelity], ...] = ()
    #: The tasks the gate could not measure (no float detection on any frame): never accepted.
    blind: tuple[str, ...] = ()

    @property
    def failing_text(self) -> str:
        """``"task 0.9512, other 0.9031"``: the tasks below the threshold with their agreement, and
        ``"det unmeasured"`` for a blind task."""
        below = [f"{task} {f.value:.4f}" for task, f in self.failing if task not in self.blind]
        blind = (f"{task} unmeasured (fewer than {MIN_DETECTIONS} float detections)" for task in self.blind)
        return ", ".join([*below, *blind])

    def reason(self, fallback: str) -> str:
        """``lowest agreement X >= T``, ``lowest agreement X < T; <fallback>``, or, when a task
        could not be measured, ``cannot measure 'det' ...; <fallback>``."""
        if self.accepted:
            return f"lowest agreement {self.lowest:.4f} >= {self.min_agreement}"
        if self.blind:
            names = ", ".join(repr(t) for t in self.blind)
            return (
                f"cannot measure {names}: the float model finds fewer than {MIN_DETECTIONS} detections on the "
                f"frames given; {fallback}"
            )
        return f"lowest agreement {self.lowest:.4f} < {self.min_agreement}; {fallback}"


@dataclass
class GateDecision:
    """What happened to one graph (``"trunk"`` or a head's name) at one precision; ``path`` is
    where its artifact goes in the bundle, ``fidelity`` is per task, ``size`` in bytes."""

    graph: str
    precision: str
    path: str
    accepted: bool = False
    reason: str = ""
    fidelity: dict[str, Fidelity] = field(default_factory=dict)
    size: int = 0
    #: Median latency of the candidate and of the FP32 graph on this machine (None: not timed).
    latency_ms: float | None = None
    fp32_latency_ms: float | None = None

    def slower_note(self) -> str | None:
        """``trunk int8 is not faster than fp32 here (1.02 ms vs 0.98 ms) ...`` for a kept graph
        that did not beat its FP32 graph on this machine; None otherwise."""
        if not self.accepted or self.latency_ms is None or not self.fp32_latency_ms:
            return None
        if self.latency_ms < self.fp32_latency_ms:
            return None
        return (
            f"{self.graph} {self.precision} is not faster than fp32 on this machine ({self.latency_ms:.3f} ms vs "
            f"{self.fp32_latency_ms:.3f} ms, {self.latency_ms / self.fp32_latency_ms:.2f}x): "
            "`edge-runtime tune` on the device measures which to run"
        )

    @property
    def agreement(self) -> float | None:
        """The lowest agreement over the measured tasks (None before any was measured)."""
        return min((f.value for f in self.fidelity.values()), default=None)

    def artifact_fidelity(self, min_agreement: float) -> dict[str, Any]:
        """The ``fidelity`` written on the artifact in the manifest."""
        return {
            "agreement": None if self.agreement is None else round(self.agreement, 6),
            "min_agreement": min_agreement,
            "tasks": {task: f.to_dict() for task, f in self.fidelity.items()},
        }

    def report_row(self) -> dict[str, Any]:
        """The fields every report row shares (``quantization.json``, ``tflite.json``)."""
        return {
            "graph": self.graph,
            "precision": self.precision,
            "accepted": self.accepted,
            "reason": self.reason,
            "path": self.path if self.accepted else None,
            "agreement": None if self.agreement is None else round(self.agreement, 6),
            "fidelity": {task: f.to_dict() for task, f in self.fidelity.items()},
            "size_bytes": self.size,
        }

    def to_dict(self) -> dict[str, Any]:
        """The decision's row in the report; subclasses add their fields."""
        return self.report_row()


@dataclass(frozen=True)
class Gate:
    """The fidelity gate for one model: each task's decoder and outputs, the float model's
    outputs per task on the frames it measures on (``reference``), the input size, the threshold
    and the tasks it cannot measure (``blind``: their candidates are rejected)."""

    tasks: Mapping[str, Task]
    reference: Mapping[str, Samples]
    input_size: tuple[int, int]
    min_agreement: float
    blind: frozenset[str] = frozenset()

    @classmethod
    def for_manifest(cls, manifest: Manifest, reference: Mapping[str, Samples], min_agreement: float) -> Gate:
        """The gate of a bundle's heads (their decoders and outputs from the manifest) on ``reference``."""
        return cls(tasks_of(manifest), reference, input_size(manifest.input), min_agreement)

    def detections(self) -> dict[str, int]:
        """How many detections the float model finds on the gate's frames, per detection task."""
        found = {}
        for task, spec in self.tasks.items():
            if spec.decoder is None or spec.decoder.type not in DETECTION_TYPES:
                continue
            fidelity = head_fidelity(
                task, spec.decoder, spec.outputs, self.reference[task], self.reference[task], self.input_size
            )
            found[task] = int(fidelity.detail.get("reference_detections", 0))
        return found

    def unmeasurable(self) -> dict[str, int]:
        """The detection tasks whose float model finds fewer than :data:`MIN_DETECTIONS` on the
        gate's frames, with how many it finds."""
        return {task: count for task, count in self.detections().items() if count < MIN_DETECTIONS}

    def fidelity(self, task: str, outputs: Samples, precision: str) -> Fidelity:
        """How well ``outputs`` (per frame of the gate) of a ``precision`` candidate reproduce the
        float model for ``task`` (a blind task's float candidates: on its raw outputs)."""
        spec = self.tasks[task]
        decoder = _RAW_OUTPUTS if task in self.blind and precision in RAW_OUTPUT_PRECISIONS else spec.decoder
        return head_fidelity(task, decoder, spec.outputs, self.reference[task], outputs, self.input_size)

    def judge(self, fidelity: Mapping[str, Fidelity], precision: str) -> Verdict:
        """Accepted when every task meets ``min_agreement`` and, for a quantized candidate, none
        of them is blind."""
        lowest = min((f.value for f in fidelity.values()), default=1.0)
        raw = precision in RAW_OUTPUT_PRECISIONS
        blind = tuple(task for task in fidelity if task in self.blind and not raw)
        failing = tuple((task, f) for task, f in fidelity.items() if not f.meets(self.min_agreement) or task in blind)
        return Verdict(lowest >= self.min_agreement and not blind, lowest, self.min_agreement, failing, blind)

    def decide(self, decision: GateDecision, fidelity: Mapping[str, Fidelity]) -> Verdict:
        """Record ``fidelity`` on ``decision`` and accept or reject it; the reason is the caller's."""
        decision.fidelity = dict(fidelity)
        verdict = self.judge(fidelity, decision.precision)
        decision.accepted = verdict.accepted
        return verdict


D = TypeVar("D", bound=GateDecision)
V = TypeVar("V")


@dataclass(frozen=True)
class GateFrames(Generic[V]):
    """What :func:`build_gate` chose: the gate, the per-frame values it measures on (the
    held-back frames' first, then the calibration frames' when they were needed) and ``basis``,
    the words the reports use for them (``"3 held-back frames"``)."""

    gate: Gate
    values: list[V]
    basis: str

    def to_dict(self) -> dict[str, Any]:
        """``{"frames", "basis", "blind"}``: the report's record of what the gate measured on."""
        return {"frames": len(self.values), "basis": self.basis, "blind": sorted(self.gate.blind)}


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def build_gate(
    tasks: Mapping[str, Task],
    size: tuple[int, int],
    min_agreement: float,
    held: Sequence[V],
    calibration: Sequence[V],
    reference_of: Callable[[Sequence[V]], Mapping[str, Samples]],
    *,
    keep_unmeasured: bool = False,
) -> GateFrames[V]:
    """The gate of ``tasks`` (model input ``size``, see :func:`tasks_of` and :func:`input_size`)
    and the frames it measures on: the ``held`` back frames; when a detection task's float model
    finds fewer than :data:`MIN_DETECTIONS` on them, the ``calibration`` frames too (warned:
    optimistic at INT8, which was calibrated on them); a task still short of them is blind: the
    gate rejects every quantized candidate it judges and judges float ones on the raw outputs
    (warned, with what to do) — unless ``keep_unmeasured``, where it judges on what there is
    (warned). ``reference_of(values)`` runs the float model: its outputs per head on those frames."""
    values = list(held)
    gate = Gate(tasks, reference_of(values), size, min_agreement)
    basis = f"{_plural(len(values), 'held-back frame')}"
    short = gate.unmeasurable()
    if short and calibration:
        names = ", ".join(f"{t!r} ({n})" for t, n in short.items())
        logger.warning(
            "head %s: the float model finds fewer than %d detections on the %d held-back frames; the gate also "
            "measures on the %d calibration frames (optimistic for INT8, which was calibrated on them)",
            names, MIN_DETECTIONS, len(values), len(calibration),
        )  # fmt: skip
        values = [*values, *calibration]
        gate = Gate(tasks, reference_of(values), size, min_agreement)
        basis = (
            f"{_plural(len(held), 'held-back frame')} + {_plural(len(calibration), 'calibration frame')} "
            f"(fewer than {MIN_DETECTIONS} detections for {', '.join(map(repr, short))} on the held-back ones)"
        )
        short = gate.unmeasurable()
    for task, count in short.items():
        consequence = (
            "it judges on them anyway (--keep-unmeasured)"
            if keep_unmeasured
            else "it rejects every quantized candidate this task judges and judges float ones on the raw outputs: "
            "calibrate on frames that show what the model detects"
        )
        logger.warning(
            "head %r: the float model finds %d detection%s on the %d frames given, fewer than the %d the gate "
            "needs to measure this task; %s",
            task, count, "" if count == 1 else "s", len(values), MIN_DETECTIONS, consequence,
        )  # fmt: skip
    if short and not keep_unmeasured:
        gate = replace(gate, blind=frozenset(short))
    if short and keep_unmeasured:
        basis += f"; judged on fewer than {MIN_DETECTIONS} detections for {', '.join(map(repr, short))} on purpose"
    return GateFrames(gate, values, basis)


def accepted(decisions: Iterable[D]) -> dict[tuple[str, str], D]:
    """The accepted decisions by ``(graph, precision)``."""
    return {(d.graph, d.precision): d for d in decisions if d.accepted}


def report_json(fields: Mapping[str, Any], decisions: Sequence[GateDecision]) -> bytes:
    """A gate report (``quantization.json``, ``tflite.json``): ``fields``, then one row per decision."""
    report = {**fields, "decisions": [d.to_dict() for d in decisions]}
    return (json.dumps(report, indent=2) + "\n").encode()


__all__ = [
    "MIN_DETECTIONS",
    "Gate",
    "GateDecision",
    "GateFrames",
    "Task",
    "Verdict",
    "accepted",
    "build_gate",
    "input_size",
    "report_json",
    "tasks_of",
]
