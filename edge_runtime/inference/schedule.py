"""When each head runs: every N frames, on/off at run time, and conditional heads.

A conditional head (``schedule.when = {head: "detector", class_in: ["person"], min_score: 0.5}``)
runs only on frames where the watched head ran and its decoded result matched: a
classification or detection with a listed label at or above ``min_score``, or a
segmentation whose listed classes cover at least ``min_score`` of the frame. Heads are
ordered so that a watched head always runs before the heads that watch it.

Example::

    scheduler = HeadScheduler({"shape": Schedule(), "mask": Schedule(every_n_frames=2)})
    scheduler.due(frame_index=1)        # {"shape"}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from edge_runtime.bundle.specs import Schedule
from edge_runtime.errors import BundleError
from edge_runtime.inference.results import Classification, Detections, HeadResult, Segmentation


def condition_matches(result: HeadResult, class_in: Sequence[str] | None, min_score: float) -> bool:
    """Whether a decoded result satisfies a ``when`` condition."""
    wanted = set(class_in) if class_in else None
    if isinstance(result, (Classification, Detections)):
        return any(
            (wanted is None or label in wanted) and float(score) >= min_score
            for label, score in zip(result.labels, result.scores, strict=True)
        )
    if isinstance(result, Segmentation):
        return any(
            (wanted is None or label in wanted) and float(area) >= min_score
            for label, area in result.class_areas.items()
        )
    return True  # other results carry no classes: the watched head running is the condition


class HeadScheduler:
    """Decides per frame which heads are due."""

    def __init__(self, schedules: Mapping[str, Schedule | None]) -> None:
        self._schedules = {name: s or Schedule() for name, s in schedules.items()}
        self._enabled = {name: s.enabled for name, s in self._schedules.items()}
        self.order: list[str] = self._ordered()

    def _ordered(self) -> list[str]:
        order: list[str] = []
        visiting: list[str] = []

        def visit(name: str) -> None:
            if name in order:
                return
            if name in visiting:
                cycle = " -> ".join([*visiting[visiting.index(name) :], name])
                raise BundleError(f"conditional heads form a cycle: {cycle}")
            visiting.append(name)
            watched = self.watched(name)
            if watched is not None:
                if watched not in self._schedules:
                    raise BundleError(
                        f"head {name!r} runs when head {watched!r} matches, but there is no loaded head {watched!r}; "
                        f"heads: {', '.join(self._schedules)}"
                    )
                visit(watched)
            visiting.pop()
            order.append(name)

        for name in self._schedules:
            visit(name)
        return order

    def watched(self, name: str) -> str | None:
        """The head that ``name`` is conditional on, if any."""
        when = self._schedules[name].when
        return None if when is None else str(when["head"])

    def set_every_n_frames(self, name: str, every: int) -> None:
        """Change how often a head runs (from the next frame)."""
        if every < 1:
            raise ValueError(f"every_n_frames must be >= 1, got {every}")
        self._schedules[name] = replace(self._schedules[name], every_n_frames=every)

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Turn a head on or off."""
        self._enabled[name] = enabled

    def is_enabled(self, name: str) -> bool:
        """Whether a head is on."""
        return self._enabled[name]

    def every_n_frames(self, name: str) -> int:
        """How often a head runs (every N-th frame)."""
        return self._schedules[name].every_n_frames

    def due(self, frame_index: int) -> set[str]:
        """Heads whose period and on/off state make them run on this frame (conditions aside)."""
        return {
            name
            for name, schedule in self._schedules.items()
            if self._enabled[name] and frame_index % schedule.every_n_frames == 0
        }

    def condition_met(self, name: str, results: Mapping[str, HeadResult]) -> bool:
        """Whether a due head's condition holds, given the results of this frame so far."""
        when = self._schedules[name].when
        if when is None:
            return True
        watched = results.get(str(when["head"]))
        if watched is None:
            return False
        return condition_matches(watched, when.get("class_in"), float(when.get("min_score", 0.0)))
