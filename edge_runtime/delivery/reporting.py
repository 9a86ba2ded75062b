"""What each head's results are published with, and report-by-exception.

A published message carries one frame's results (all heads that ran on it), so per-head
settings combine per message: its QoS is the highest of the heads it carries, its expiry the
longest (none when any head has none), and heads marked ``float32`` keep float32 arrays.

Report-by-exception (a head with a ``deadband``): the head's result is left out of a frame's
message when it did not change since the head was last published — every number within the
deadband, the same labels, the same counts and shapes. A frame left with no result at all is
not published (it takes no ``seq``). So that silence is never ambiguous, a heartbeat message
(codec kind ``heartbeat``) goes out when nothing was published for ``heartbeat_s``; it says,
per held-back head, how many results were held back and when the head was last published.

Example::

    reporter = Reporter({"shape": HeadPolicy(deadband=0.05)}, heartbeat_s=30)
    kept = reporter.filter(frame_result)      # a FrameResult with the changed heads, or None
    beat = reporter.heartbeat_due(device="cam1", epoch=epoch)   # a heartbeat line, or None
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_runtime.errors import ConfigError

if TYPE_CHECKING:
    from edge_runtime.inference.results import FrameResult, HeadResult


@dataclass(frozen=True)
class HeadPolicy:
    """How one head's results are published. ``deadband`` None: every result is published."""

    qos: int = 1
    expiry_s: float | None = None
    deadband: float | None = None
    float32: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.qos, bool) or self.qos not in (0, 1, 2):
            raise ConfigError(f"head qos must be 0, 1 or 2, got {self.qos!r}")
        if self.expiry_s is not None and not self.expiry_s > 0:
            raise ConfigError(f"head expiry_s must be > 0 seconds, got {self.expiry_s!r}")
        if self.deadband is not None and not (math.isfinite(self.deadband) and self.deadband >= 0):
            raise ConfigError(f"head deadband must be a number >= 0, got {self.deadband!r}")


def changed(old: Any, new: Any, deadband: float) -> bool:
    """Whether ``new`` differs from ``old`` beyond ``deadband``: numbers (and float arrays,
    element-wise) by more than it (a non-finite number by any change); anything else — labels,
    integer arrays such as class ids and masks, keys, lengths, shapes, types — at all. Typed
    head results (frozen dataclasses) compare field by field."""
    if isinstance(old, np.ndarray) or isinstance(new, np.ndarray):
        return _arrays_changed(old, new, deadband)
    if dataclasses.is_dataclass(old) and not isinstance(old, type):
        if type(old) is not type(new):
            return True
        return any(changed(getattr(old, f.name), getattr(new, f.name), deadband) for f in dataclasses.fields(old))
    if isinstance(old, bool) or isinstance(new, bool):
        return old is not new
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        if math.isfinite(old) and math.isfinite(new):
            return abs(new - old) > deadband
        return not (old == new or (math.isnan(old) and math.isnan(new)))
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        if old.keys() != new.keys():
            return True
        return any(changed(old[k], new[k], deadband) for k in old)
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        if len(old) != len(new):
            return True
        return any(changed(a, b, deadband) for a, b in zip(old, new, strict=True))
    return bool(type(old) is not type(new) or old != new)


def _arrays_changed(old: Any, new: Any, deadband: float) -> bool:
    if not (isinstance(old, np.ndarray) and isinstance(new, np.ndarray)):
        return True
    if old.shape != new.shape or old.dtype.kind != new.dtype.kind:
        return True
    if old.dtype.kind != "f":
        return not np.array_equal(old, new)
    a, b = old.astype(np.float64), new.astype(np.float64)
    finite = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(np.isfinite(a), np.isfinite(b)) or not np.array_equal(a[~finite], b[~finite], equal_nan=True):
        return True
    return bool(np.any(np.abs(b[finite] - a[finite]) > deadband))


@dataclass
class _Held:
    last: Any = None  # the head's last published result (a typed head result)
    last_published: float | None = None  # wall-clock time
    held: int = 0  # results left out since


class Reporter:
    """Per-head publishing policy for a stream of frame results (typed: :class:`FrameResult`)."""

    def __init__(
        self,
        policies: Mapping[str, HeadPolicy],
        *,
        default: HeadPolicy | None = None,
        heartbeat_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not heartbeat_s > 0:
            raise ConfigError(f"heartbeat interval must be > 0 seconds, got {heartbeat_s!r}")
        self.policies = dict(policies)
        self.default = default or HeadPolicy()
        self.heartbeat_s = float(heartbeat_s)
        self._clock = clock
        self._state = {name: _Held() for name, p in self.policies.items() if p.deadband is not None}
        self._last_message = clock()
        self.suppressed_frames = 0
        self.suppressed_results = 0
        self.heartbeats = 0

    @property
    def by_exception(self) -> bool:
        """Whether any head reports by exception (then heartbeats are due)."""
        return bool(self._state)

    def policy(self, head: str) -> HeadPolicy:
        return self.policies.get(head, self.default)

    def float32_heads(self) -> set[str]:
        return {name for name, p in self.policies.items() if p.float32}

    def qos(self, heads: Collection[str]) -> int:
        """The message's QoS: the highest of its heads' (the default's for none)."""
        return max((self.policy(h).qos for h in heads), default=self.default.qos)

    def expiry_s(self, heads: Collection[str]) -> float | None:
        """The message's expiry: the longest of its heads' (None when any head never expires)."""
        values = [self.policy(h).expiry_s for h in heads] or [self.default.expiry_s]
        return None if any(v is None for v in values) else max(v for v in values if v is not None)

    def filter(self, result: FrameResult) -> FrameResult | None:
        """``result`` without the head results that did not change since they were last
        published (typed results compared with :func:`changed`); None when nothing is left to
        say. A result passes unchanged when no head reports by exception."""
        if not self._state:
            self._last_message = self._clock()
            return result
        kept: dict[str, HeadResult] = {}
        now = time.time()
        for name, value in result.results.items():
            held = self._state.get(name)
            deadband = self.policy(name).deadband
            if held is None or deadband is None:
                kept[name] = value
                continue
            if held.last_published is not None and not changed(held.last, value, deadband):
                held.held += 1
                self.suppressed_results += 1
                continue
            held.last = value  # frozen, with arrays of its own: kept as it is
            held.last_published = now
            held.held = 0
            kept[name] = value
        if not kept:
            self.suppressed_frames += 1
            return None
        self._last_message = self._clock()
        if len(kept) == len(result.results):
            return result
        return replace(result, results=kept)

    def heartbeat_due(self, *, device: str, epoch: str) -> dict[str, Any] | None:
        """A heartbeat line (``seq`` to be set by the publisher) when nothing was published for
        ``heartbeat_s`` and some head reports by exception; else None."""
        if not self._state or self._clock() - self._last_message < self.heartbeat_s:
            return None
        self._last_message = self._clock()
        self.heartbeats += 1
        heads = {
            name: {
                "held": held.held,
                "last_published": None if held.last_published is None else round(held.last_published, 3),
            }
            for name, held in self._state.items()
        }
        return {"kind": "heartbeat", "device": device, "epoch": epoch, "seq": -1, "ts": time.time(), "heads": heads}

    def mark_published(self) -> None:
        """Something else was published (restarts the heartbeat clock)."""
        self._last_message = self._clock()


__all__ = ["HeadPolicy", "Reporter", "changed"]
