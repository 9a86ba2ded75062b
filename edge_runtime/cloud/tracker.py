"""De-duplication on ``(device, epoch, seq)`` and gaps per ``(device, epoch)`` (docs/protocol.md §7).

:class:`StreamTracker` is pure: no MQTT, no I/O. Feed it decoded lines; read the counters, the
gaps and the summary that ``edge-runtime subscribe`` prints at exit.

Example::

    tracker = StreamTracker()
    for line in lines:
        if tracker.count_line(line):        # False: a duplicate (counted)
            write(line)
    print(tracker.summary())                # "cam1 epoch e1: 2 missing seq: 5-6"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge_runtime.names import printable

#: Per (device, epoch), the most out-of-order seqs kept above the contiguous one; past it, the
#: oldest gap is given up (reported as lost, a later arrival in it counts as a duplicate).
MAX_PENDING = 10_000

Key = tuple[str, str]


@dataclass
class _Stream:
    """One (device, epoch): every seq <= ``top`` is seen (from ``first`` on), plus ``above``."""

    first: int
    top: int
    above: set[int] = field(default_factory=set)
    before: set[int] = field(default_factory=set)  # seqs below the first one seen (joined mid-stream)
    lost: list[tuple[int, int]] = field(default_factory=list)  # gaps given up (MAX_PENDING)


class StreamTracker:
    """De-duplicates on ``(device, epoch, seq)`` and finds gaps per ``(device, epoch)``.

    Memory per stream is bounded: the highest contiguous seq, plus the set of seqs above it
    (at most ``max_pending``; past it the oldest gap is given up and listed as lost). The first
    seq seen of a stream starts it: earlier seqs are history, not a gap. ``gap_reports=False``
    (shared subscriptions) keeps de-duplication and reports no gaps.
    """

    def __init__(self, *, gap_reports: bool = True, max_pending: int = MAX_PENDING) -> None:
        self.gap_reports = gap_reports
        self.max_pending = max_pending
        self.received = 0  # every message, whatever it holds
        self.results = 0  # unique frames
        self.duplicates = 0
        self.malformed = 0
        self.rejected = 0  # payloads whose device is not the one their topic names
        self.heartbeats = 0  # unique heartbeats
        self._streams: dict[Key, _Stream] = {}

    def observe(self, device: str, epoch: str, seq: int) -> bool:
        """Record one seq; ``True`` when it is new, ``False`` for a duplicate (counted)."""
        key = (device, epoch)
        st = self._streams.get(key)
        if st is None:
            self._streams[key] = _Stream(first=seq, top=seq)
            return True
        if seq < st.first:
            if seq in st.before:
                self.duplicates += 1
                return False
            if len(st.before) < self.max_pending:
                st.before.add(seq)
            return True
        if seq <= st.top or seq in st.above:
            self.duplicates += 1
            return False
        if seq == st.top + 1:
            st.top = seq
            while st.top + 1 in st.above:
                st.top += 1
                st.above.discard(st.top)
        else:
            st.above.add(seq)
            if len(st.above) > self.max_pending:
                self._give_up_oldest_gap(st)
        return True

    def _give_up_oldest_gap(self, st: _Stream) -> None:
        low = min(st.above)
        if self.gap_reports:
            st.lost.append((st.top + 1, low - 1))
            del st.lost[: -self.max_pending]
        st.above.discard(low)
        st.top = low
        while st.top + 1 in st.above:
            st.top += 1
            st.above.discard(st.top)

    def count_line(self, line: dict[str, Any]) -> bool:
        """Count a decoded line (frame or heartbeat); ``True`` when it is new."""
        self.received += 1
        if not self.observe(str(line["device"]), str(line["epoch"]), int(line["seq"])):
            return False
        if line.get("kind") == "heartbeat":
            self.heartbeats += 1
        else:
            self.results += 1
        return True

    def count_malformed(self) -> None:
        self.received += 1
        self.malformed += 1

    def count_rejected(self) -> None:
        """A payload that claims another device than its topic (dropped before de-dup)."""
        self.received += 1
        self.rejected += 1

    def streams(self) -> list[Key]:
        return sorted(self._streams)

    def gaps(self) -> dict[Key, list[tuple[int, int]]]:
        """Missing seq ranges (inclusive) per (device, epoch), lost ones included; ``{}`` when
        gap reports are off. Streams without gaps are left out."""
        if not self.gap_reports:
            return {}
        out: dict[Key, list[tuple[int, int]]] = {}
        for key, st in sorted(self._streams.items()):
            ranges = list(st.lost)
            prev = st.top
            for seq in sorted(st.above):
                if seq > prev + 1:
                    ranges.append((prev + 1, seq - 1))
                prev = seq
            if ranges:
                out[key] = ranges
        return out

    def summary(self) -> str:
        """Counters and gaps, one item a line (what ``subscribe`` prints to stderr at exit)."""
        lines = [
            f"received {self.received} messages: {self.results} results, {self.heartbeats} heartbeats, "
            f"{self.duplicates} duplicates, {self.malformed} malformed"
            + (f", {self.rejected} rejected (device differs from the topic's)" if self.rejected else "")
        ]
        if not self.gap_reports:
            lines.append("gap reports off under a shared subscription (each subscriber sees part of each stream)")
            return "\n".join(lines)
        gaps = self.gaps()
        for device, epoch in self.streams():
            ranges = gaps.get((device, epoch), [])
            if ranges:
                missing = sum(b - a + 1 for a, b in ranges)
                shown = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:20])
                more = f" (+{len(ranges) - 20} more ranges)" if len(ranges) > 20 else ""
                lines.append(f"{printable(device)} epoch {printable(epoch)}: {missing} missing seq: {shown}{more}")
            else:
                lines.append(f"{printable(device)} epoch {printable(epoch)}: no gaps")
        return "\n".join(lines)


__all__ = ["MAX_PENDING", "Key", "StreamTracker"]
