"""Which artifact each graph of a bundle runs, on which backend: the one rule.

For each graph (the trunk, each loaded head), given the chosen backend and the preferred
precision:

1. the best artifact of the backend's format, by :data:`PRECISION_FALLBACK` (fp32 → fp16 → int8,
   int8 → fp16 → fp32, …);
2. if the graph has no artifact of that format at all, the other format on the other backend
   (:data:`FALLBACK_BACKEND`: tflite → onnxruntime; onnxruntime → tflite only when a TFLite
   runtime can be imported), by the same precision order.

Each :class:`ArtifactChoice` records the graph, the artifact, the backend that runs it and, when
it is not what was asked, why (``"no tflite artifact: runs on onnxruntime fp32"``). The engine
(:meth:`~edge_runtime.inference.engine.Engine.from_bundle`), ``edge-runtime run --strict``, the
device profile's backend check (:mod:`edge_runtime.ops.device`) and ``edge-export convert``'s
report all use :func:`plan_artifacts`; nothing else reasons about formats.

Example::

    plan = plan_artifacts(manifest, "tflite", "int8")
    plan.summary()      # "trunk tflite int8; head 'box' onnxruntime fp32 (no tflite artifact: runs on ...)"
    plan.mixed          # True: more than one backend
    plan.check_strict("--strict")   # ConfigError naming each graph that is not as asked
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edge_runtime.bundle.specs import Artifact, GraphEntry
from edge_runtime.errors import BackendUnavailableError, BundleError, ConfigError

logger = logging.getLogger(__name__)

#: For each preferred precision, the order in which to fall back when a graph lacks it.
PRECISION_FALLBACK: dict[str, tuple[str, ...]] = {
    "fp32": ("fp32", "fp16", "int8"),
    "fp16": ("fp16", "fp32", "int8"),
    "int8": ("int8", "fp16", "fp32"),
}
#: The artifact format each backend loads.
BACKEND_FORMATS: dict[str, str] = {"onnxruntime": "onnx", "tflite": "tflite"}
#: How reports name each backend.
BACKEND_TITLES: dict[str, str] = {"onnxruntime": "ONNX Runtime", "tflite": "LiteRT"}
#: Where a graph without an artifact of the chosen backend's format runs instead.
FALLBACK_BACKEND: dict[str, str] = {"tflite": "onnxruntime", "onnxruntime": "tflite"}
#: Fallback backends that must be importable before a graph is sent to them (onnxruntime is a
#: dependency of the package: always there).
_OPTIONAL_BACKENDS = frozenset({"tflite"})


def graph_label(graph: str) -> str:
    """``trunk`` or ``head 'box'``: how logs and errors name a graph."""
    return "trunk" if graph == "trunk" else f"head {graph!r}"


def backend_available(name: str) -> bool:
    """True when backend ``name`` can be created here (its runtime imports)."""
    from edge_runtime.inference.backends import get_backend

    try:
        get_backend(name)
    except BackendUnavailableError:
        return False
    return True


def best_of_format(entry: GraphEntry, artifact_format: str, precision: str) -> Artifact | None:
    """The artifact of ``entry`` in ``artifact_format`` by the precision order, or None when the
    graph has none of that format."""
    candidates = [a for a in entry.artifacts if a.format == artifact_format]
    for wanted in PRECISION_FALLBACK[precision]:
        for artifact in candidates:
            if artifact.precision == wanted:
                return artifact
    return candidates[0] if candidates else None


def choose_artifact(entry: GraphEntry, what: str, backend_format: str, precision: str) -> Artifact:
    """The artifact of ``entry`` for one format only, by preferred precision with fallback (logged);
    :class:`BundleError` when the graph has none of that format. For callers that need one format
    (the exporter's self-test); the engine uses :func:`plan_artifacts`, which also changes backend."""
    artifact = best_of_format(entry, backend_format, precision)
    if artifact is None:
        formats = sorted({a.format for a in entry.artifacts})
        raise BundleError(
            f"{what} has no {backend_format} artifact (it has: {', '.join(formats)}); "
            "choose another backend or re-export with that format"
        )
    if artifact.precision != precision:
        logger.info(
            "%s: no %s %s artifact, using %s (%s)", what, backend_format, precision, artifact.precision, artifact.path
        )
    return artifact


@dataclass(frozen=True)
class ArtifactChoice:
    """What one graph runs: ``artifact`` on ``backend``; ``reason`` says why when that is not the
    asked backend at the asked precision (None when it is)."""

    graph: str
    artifact: Artifact
    backend: str
    reason: str | None = None

    @property
    def what(self) -> str:
        """``trunk`` or ``head 'box'``."""
        return graph_label(self.graph)

    def describe(self, reason: str | None = None) -> str:
        """``head 'box' onnxruntime fp32 (no tflite artifact: runs on onnxruntime fp32)``;
        ``reason`` replaces the recorded one in the parentheses."""
        text = f"{self.what} {self.backend} {self.artifact.precision}"
        reason = reason or self.reason
        return f"{text} ({reason})" if reason else text


@dataclass(frozen=True)
class ArtifactPlan:
    """The choice of every graph, trunk first, for ``backend`` at ``precision``."""

    backend: str
    precision: str
    choices: Mapping[str, ArtifactChoice]

    @property
    def backends(self) -> tuple[str, ...]:
        """The backends the plan uses, the asked one first when it runs anything."""
        used = [c.backend for c in self.choices.values()]
        ordered = sorted(set(used), key=lambda b: (b != self.backend, used.index(b)))
        return tuple(ordered)

    @property
    def mixed(self) -> bool:
        """True when the graphs run on more than one backend."""
        return len(self.backends) > 1

    @property
    def fallbacks(self) -> tuple[ArtifactChoice, ...]:
        """The choices that are not what was asked (another backend or precision)."""
        return tuple(c for c in self.choices.values() if c.reason)

    def summary(self, explain: Callable[[ArtifactChoice], str | None] | None = None) -> str:
        """``trunk tflite int8; head 'box' onnxruntime fp32 (no tflite artifact: ...)``;
        ``explain(choice)`` may give a fuller reason for a choice that fell back."""
        return "; ".join(
            c.describe(explain(c) if explain is not None and c.reason else None) for c in self.choices.values()
        )

    def headline(self) -> str:
        """``LiteRT (--backend tflite --precision int8)``: what a report line is about."""
        return f"{BACKEND_TITLES[self.backend]} (--backend {self.backend} --precision {self.precision})"

    def log(self, log: logging.Logger | None = None) -> None:
        """One line per graph that fell back: WARNING for another backend, INFO for another precision."""
        log = log or logger
        for choice in self.fallbacks:
            level = logging.WARNING if choice.backend != self.backend else logging.INFO
            log.log(level, "%s: %s (%s)", choice.what, choice.reason, choice.artifact.path)

    def strict_problems(self) -> list[str]:
        """``head 'box': no tflite artifact: runs on onnxruntime fp32``, per graph not as asked."""
        return [f"{c.what}: {c.reason}" for c in self.fallbacks]

    def check_strict(self, who: str = "strict") -> None:
        """:class:`ConfigError` (one line) when any graph would run on another backend or at
        another precision than asked; ``who`` starts the message (``--strict``)."""
        problems = self.strict_problems()
        if problems:
            raise ConfigError(
                f"{who}: the {self.backend} backend at {self.precision} cannot run every graph as asked: "
                + "; ".join(problems)
            )


def choose_graph(
    graph: str,
    entry: GraphEntry,
    backend: str,
    precision: str,
    available: Callable[[str], bool] = backend_available,
) -> ArtifactChoice:
    """The choice for one graph by the rule of this module; :class:`BundleError` when neither its
    backend's format nor the fallback (installed) has an artifact."""
    what = graph_label(graph)
    artifact_format = BACKEND_FORMATS[backend]
    artifact = best_of_format(entry, artifact_format, precision)
    if artifact is not None:
        reason = None
        if artifact.precision != precision:
            reason = f"no {artifact_format} {precision} artifact, using {artifact.precision}"
        return ArtifactChoice(graph, artifact, backend, reason)
    other = FALLBACK_BACKEND[backend]
    other_format = BACKEND_FORMATS[other]
    formats = sorted({a.format for a in entry.artifacts})
    fallback = best_of_format(entry, other_format, precision)
    if fallback is None:
        raise BundleError(
            f"{what} has no {artifact_format} artifact and no {other_format} artifact to fall back to "
            f"(it has: {', '.join(formats) or 'none'}); re-export it with one of those formats"
        )
    if other in _OPTIONAL_BACKENDS and not available(other):
        raise BundleError(
            f"{what} has no {artifact_format} artifact (it has: {', '.join(formats)}), and the {other} backend "
            f"that would run its {other_format} artifact is not installed (pip install 'edge-runtime[{other}]')"
        )
    return ArtifactChoice(
        graph, fallback, other, f"no {artifact_format} artifact: runs on {other} {fallback.precision}"
    )


def plan_artifacts(
    manifest: Any,
    backend: str,
    precision: str,
    heads: Iterable[str] | None = None,
    available: Callable[[str], bool] = backend_available,
) -> ArtifactPlan:
    """The choice of the trunk and each head of ``manifest`` (``heads``: the loaded ones, None:
    all) for ``backend`` at ``precision``; ``available(name)`` says whether a fallback backend
    can be imported (default: try it)."""
    if backend not in BACKEND_FORMATS:
        raise ConfigError(f"unknown backend {backend!r}; available: {', '.join(BACKEND_FORMATS)}")
    if precision not in PRECISION_FALLBACK:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISION_FALLBACK)}")
    names = list(manifest.heads) if heads is None else list(heads)
    choices = {"trunk": choose_graph("trunk", manifest.trunk, backend, precision, available)}
    for name in names:
        choices[name] = choose_graph(name, manifest.heads[name], backend, precision, available)
    return ArtifactPlan(backend, precision, choices)


def plan_assigned(
    manifest: Any,
    assignment: Mapping[str, tuple[str, str]],
    heads: Iterable[str] | None = None,
    available: Callable[[str], bool] = backend_available,
) -> ArtifactPlan:
    """The choice of each graph when each is given its own ``(backend, precision)`` (a tuning);
    a graph without one (a head the tuning did not see) follows the trunk's, with that reason."""
    if "trunk" not in assignment:
        raise ConfigError("a per-graph assignment needs the trunk's backend and precision")
    trunk_backend, trunk_precision = assignment["trunk"]
    names = list(manifest.heads) if heads is None else list(heads)
    choices: dict[str, ArtifactChoice] = {}
    for graph in ["trunk", *names]:
        entry = manifest.trunk if graph == "trunk" else manifest.heads[graph]
        backend, precision = assignment.get(graph, (trunk_backend, trunk_precision))
        if backend not in BACKEND_FORMATS:
            raise ConfigError(
                f"{graph_label(graph)}: unknown backend {backend!r}; available: {', '.join(BACKEND_FORMATS)}"
            )
        if precision not in PRECISION_FALLBACK:
            raise ConfigError(
                f"{graph_label(graph)}: precision {precision!r} is not one of {', '.join(PRECISION_FALLBACK)}"
            )
        choice = choose_graph(graph, entry, backend, precision, available)
        if graph not in assignment and choice.reason is None:
            choice = ArtifactChoice(graph, choice.artifact, choice.backend, "not in the tuning: as the trunk")
        choices[graph] = choice
    return ArtifactPlan(trunk_backend, trunk_precision, choices)


def native_formats(manifest: Any, heads: Iterable[str] | None = None) -> set[str]:
    """The formats every graph (trunk, ``heads`` or all heads) has: the backends that run the
    bundle without falling back to another backend for any graph."""
    names = list(manifest.heads) if heads is None else list(heads)
    entries = [manifest.trunk, *(manifest.heads[n] for n in names)]
    return set.intersection(*({a.format for a in e.artifacts} for e in entries))


__all__ = [
    "BACKEND_FORMATS",
    "BACKEND_TITLES",
    "FALLBACK_BACKEND",
    "PRECISION_FALLBACK",
    "ArtifactChoice",
    "ArtifactPlan",
    "backend_available",
    "best_of_format",
    "choose_artifact",
    "choose_graph",
    "graph_label",
    "native_formats",
    "plan_artifacts",
    "plan_assigned",
]
