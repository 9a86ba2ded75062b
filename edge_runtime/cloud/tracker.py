"""De-duplication on ``(device, epoch, seq)`` and gaps per ``(device, epoch, stream)`` (docs/protocol.md §7).

:class:`StreamTracker` is pure: no MQTT, no I/O. Feed it decoded lines and the devices' status
messages; read the counters, the gaps and the summary that ``edge-runtime subscribe`` prints at
exit; :meth:`StreamTracker.state` / :meth:`StreamTracker.resume` carry it across restarts.

Example::

    tracker = StreamTracker()
    for line in lines:
        if tracker.count_line(line):        # False: a duplicate (counted)
            write(line)
    tracker.count_status("cam1", status)    # the device's first_seq / first_held / last_issued
    print(tracker.summary())                # "cam1 epoch e1: 2 missing seq: 5-6 not received"

Result and heartbeat lines carry no stream field: they are the stream ``"results"``
(:data:`RESULTS`). A device's status message (docs/protocol.md §6.1) gives, per stream, the
first seq of the epoch (F), the oldest seq still held on the device (H) and the last seq issued
(L). With them the tracker also reports a *leading* gap (seqs from F up to the first one seen)
and a *trailing* one (after the highest seen up to L); a missing seq below H is no longer on
the device (dropped there by spool overflow or expiry, lost by a broker, or published before this
subscriber's session began), one at or above H was not received (the trailing ones: not
received *yet*, they may still come).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from edge_runtime.names import printable

#: Per stream, the most out-of-order seqs kept above the contiguous one (and the most late ones
#: kept below the first seen); past it, the oldest gap is given up (reported as lost, a later
#: arrival in it counts as a duplicate).
MAX_PENDING = 10_000
#: The stream of result and heartbeat lines (they carry no stream field).
RESULTS = "results"
#: Gap ranges shown per kind in the summary; the rest is counted.
SHOWN_RANGES = 20
STATE_VERSION = 1

Key = tuple[str, str]  # (device, epoch) of the results stream
StreamKey = tuple[str, str, str]  # (device, epoch, stream)
Range = tuple[int, int]  # inclusive


@dataclass
class _Stream:
    """One (device, epoch, stream): every seq in [``first``, ``top``] is seen, plus ``above``;
    ``first`` is None until a seq is seen (a stream known from a status message only)."""

    first: int | None = None
    top: int = -1
    above: set[int] = field(default_factory=set)
    before: set[int] = field(default_factory=set)  # seqs below the first one seen (joined mid-stream)
    lost: list[Range] = field(default_factory=list)  # gaps given up (MAX_PENDING)
    first_seq: int | None = None  # F, from the device's status
    first_held: int | None = None  # H
    last_issued: int | None = None  # L

    def highest(self) -> int | None:
        if self.first is None:
            return None
        return max(self.top, max(self.above)) if self.above else self.top


@dataclass(frozen=True)
class StreamGaps:
    """The missing seqs of one stream, in three kinds: ``not_received`` (between the first and
    the highest seq seen, or leading, at or above H), ``dropped`` (below H: dropped on the
    device) and ``pending`` (trailing, after the highest seen up to L, at or above H: not
    received yet)."""

    not_received: tuple[Range, ...] = ()
    dropped: tuple[Range, ...] = ()
    pending: tuple[Range, ...] = ()

    @property
    def count(self) -> int:
        return sum(_size(r) for r in (*self.not_received, *self.dropped, *self.pending))

    def __bool__(self) -> bool:
        return bool(self.not_received or self.dropped or self.pending)


def _size(r: Range) -> int:
    return r[1] - r[0] + 1


def _ranges(seqs: Iterable[int]) -> list[Range]:
    """Sorted seqs as inclusive ranges: ``[1, 2, 3, 7]`` → ``[(1, 3), (7, 7)]``."""
    out: list[Range] = []
    for seq in sorted(seqs):
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


def _minus(low: int, high: int, present: Iterable[int]) -> list[Range]:
    """The ranges of [low, high] without the seqs of ``present``."""
    out: list[Range] = []
    at = low
    for seq in sorted(s for s in present if low <= s <= high):
        if seq > at:
            out.append((at, seq - 1))
        at = seq + 1
    if at <= high:
        out.append((at, high))
    return out


def _split(ranges: Iterable[Range], held: int | None) -> tuple[list[Range], list[Range]]:
    """``(below held, at or above held)``; everything is "above" when ``held`` is unknown."""
    below: list[Range] = []
    rest: list[Range] = []
    for a, b in ranges:
        if held is None or a >= held:
            rest.append((a, b))
        elif b < held:
            below.append((a, b))
        else:
            below.append((a, held - 1))
            rest.append((held, b))
    return below, rest


def _is_seq(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= -1


class StreamTracker:
    """De-duplicates on ``(device, epoch, seq)`` and finds gaps per ``(device, epoch, stream)``.

    Memory per stream is bounded: the highest contiguous seq, plus the set of seqs above it
    (at most ``max_pending``; past it the oldest gap is given up and listed as lost), plus at
    most ``max_pending`` late seqs below the first one seen. Without the device's positions the
    first seq seen of a stream starts it (earlier seqs are history, not a gap); with them
    (:meth:`count_status`) the seqs from the epoch's first one are accounted for.
    ``gap_reports=False`` (shared subscriptions) keeps de-duplication and reports no gaps.
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
        self.statuses = 0  # device status messages
        #: Bumped on every change of what :meth:`state` returns (so a caller saves only then).
        self.changes = 0
        self._streams: dict[StreamKey, _Stream] = {}

    # -- input ----------------------------------------------------------------------------------

    def observe(self, device: str, epoch: str, seq: int, stream: str = RESULTS) -> bool:
        """Record one seq; ``True`` when it is new, ``False`` for a duplicate (counted)."""
        key = (device, epoch, stream)
        st = self._streams.get(key)
        if st is None:
            st = self._streams[key] = _Stream()
        if st.first is None:
            st.first = st.top = seq
            self.changes += 1
            return True
        if seq < st.first:
            if seq in st.before:
                self.duplicates += 1
                return False
            if len(st.before) < self.max_pending:
                st.before.add(seq)
                self.changes += 1
            return True
        if seq <= st.top or seq in st.above:
            self.duplicates += 1
            return False
        self.changes += 1
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

    def positions(
        self, device: str, epoch: str, stream: str, first_seq: int, first_held: int, last_issued: int
    ) -> None:
        """The device's positions of one stream (F, H, L): H and L only grow within an epoch."""
        st = self._streams.get((device, epoch, stream))
        if st is None:
            st = self._streams[(device, epoch, stream)] = _Stream()
        before = (st.first_seq, st.first_held, st.last_issued)
        st.first_seq = first_seq
        st.first_held = first_held if st.first_held is None else max(st.first_held, first_held)
        st.last_issued = last_issued if st.last_issued is None else max(st.last_issued, last_issued)
        if (st.first_seq, st.first_held, st.last_issued) != before:
            self.changes += 1

    def count_line(self, line: dict[str, Any]) -> bool:
        """Count a decoded line (frame or heartbeat); ``True`` when it is new."""
        self.received += 1
        stream = line.get("stream", RESULTS)
        if not self.observe(str(line["device"]), str(line["epoch"]), int(line["seq"]), str(stream)):
            return False
        if line.get("kind") == "heartbeat":
            self.heartbeats += 1
        else:
            self.results += 1
        return True

    def count_status(self, device: str, status: Mapping[str, Any]) -> None:
        """Count a device's status message (a parsed JSON object, docs/protocol.md §6.1) and
        take its ``epoch`` and per-stream ``{"first_seq", "first_held", "last_issued"}`` from
        ``streams``; fields that are missing or not seqs are ignored (an older device, the last
        will). ``device``: the topic's, checked by the caller."""
        self.received += 1
        self.statuses += 1
        epoch, streams = status.get("epoch"), status.get("streams")
        if not isinstance(epoch, str) or not isinstance(streams, Mapping):
            return
        for name, pos in streams.items():
            if not isinstance(name, str) or not isinstance(pos, Mapping):
                continue
            first, held, last = pos.get("first_seq"), pos.get("first_held"), pos.get("last_issued")
            if _is_seq(first) and _is_seq(held) and _is_seq(last):
                self.positions(device, epoch, name, first, held, last)

    def count_malformed(self) -> None:
        self.received += 1
        self.malformed += 1

    def count_rejected(self) -> None:
        """A payload that claims another device than its topic (dropped before de-dup)."""
        self.received += 1
        self.rejected += 1

    # -- output ---------------------------------------------------------------------------------

    def streams(self) -> list[Key]:
        """The (device, epoch) pairs of the results stream seen so far."""
        return sorted((d, e) for d, e, s in self._streams if s == RESULTS)

    def all_streams(self) -> list[StreamKey]:
        return sorted(self._streams)

    def gaps(self, stream: str = RESULTS) -> dict[Key, list[Range]]:
        """Missing seq ranges (inclusive) per (device, epoch) of ``stream`` between the first
        and the highest seq seen, lost ones included; ``{}`` when gap reports are off. Streams
        without gaps are left out. Leading and trailing gaps: :meth:`missing`."""
        if not self.gap_reports:
            return {}
        out: dict[Key, list[Range]] = {}
        for (device, epoch, name), st in sorted(self._streams.items()):
            if name != stream:
                continue
            ranges = self._middle(st)
            if ranges:
                out[(device, epoch)] = ranges
        return out

    @staticmethod
    def _middle(st: _Stream) -> list[Range]:
        ranges = list(st.lost)
        prev = st.top
        for seq in sorted(st.above):
            if seq > prev + 1:
                ranges.append((prev + 1, seq - 1))
            prev = seq
        return ranges

    def missing(self, device: str, epoch: str, stream: str = RESULTS) -> StreamGaps:
        """Every missing seq of one stream by kind (:class:`StreamGaps`): the middle gaps of
        :meth:`gaps`, and with the device's positions the leading and trailing ones."""
        st = self._streams.get((device, epoch, stream))
        if st is None or not self.gap_reports:
            return StreamGaps()
        gaps: list[Range] = []
        trailing: list[Range] = []
        first_seq, last_issued = st.first_seq, st.last_issued
        if st.first is None:  # known from the status only: nothing seen of it
            if first_seq is not None and last_issued is not None and last_issued >= first_seq:
                trailing.append((first_seq, last_issued))
        else:
            if first_seq is not None and first_seq < st.first:
                gaps += _minus(first_seq, st.first - 1, st.before)
            gaps += self._middle(st)
            highest = st.highest()
            if last_issued is not None and highest is not None and last_issued > highest:
                trailing.append((highest + 1, last_issued))
        dropped, not_received = _split(sorted(gaps), st.first_held)
        dropped_late, pending = _split(trailing, st.first_held)
        return StreamGaps(tuple(not_received), tuple(dropped + dropped_late), tuple(pending))

    def missing_counts(self) -> dict[str, int]:
        """Missing seqs over every stream: ``not_received``, ``dropped`` (on the device) and
        ``pending`` (trailing: not received yet)."""
        counts = {"not_received": 0, "dropped": 0, "pending": 0}
        for device, epoch, stream in self._streams:
            found = self.missing(device, epoch, stream)
            counts["not_received"] += sum(map(_size, found.not_received))
            counts["dropped"] += sum(map(_size, found.dropped))
            counts["pending"] += sum(map(_size, found.pending))
        return counts

    def summary(self) -> str:
        """Counters and gaps, one item a line (what ``subscribe`` prints to stderr at exit)."""
        lines = [
            f"received {self.received} messages: {self.results} results, {self.heartbeats} heartbeats, "
            f"{self.duplicates} duplicates, {self.malformed} malformed"
            + (f", {self.rejected} rejected (device differs from the topic's)" if self.rejected else "")
            + (f", {self.statuses} status" if self.statuses else "")
        ]
        if not self.gap_reports:
            lines.append("gap reports off under a shared subscription (each subscriber sees part of each stream)")
            return "\n".join(lines)
        counts = self.missing_counts()
        if any(counts.values()):
            lines.append(
                f"missing: {counts['not_received']} not received, {counts['dropped']} no longer on the device, "
                f"{counts['pending']} not received (yet)"
            )
        for device, epoch, stream in self.all_streams():
            name = f"{printable(device)} epoch {printable(epoch)}"
            if stream != RESULTS:
                name += f" stream {printable(stream)}"
            found = self.missing(device, epoch, stream)
            if not found:
                lines.append(f"{name}: no gaps")
                continue
            parts = [
                f"{_show(ranges)} {label}"
                for ranges, label in (
                    (found.not_received, "not received"),
                    (found.dropped, "no longer on the device"),
                    (found.pending, "not received (yet)"),
                )
                if ranges
            ]
            lines.append(f"{name}: {found.count} missing seq: {'; '.join(parts)}")
        return "\n".join(lines)

    # -- persistence (as data: the caller does the I/O) ------------------------------------------

    def state(self) -> dict[str, Any]:
        """What a restart needs to go on (:meth:`resume`): per stream the first and contiguous
        seq, the seqs seen around them (as ranges), the gaps given up and the device's
        positions. JSON-ready; bounded like the tracker."""
        streams = []
        for (device, epoch, stream), st in sorted(self._streams.items()):
            streams.append(
                {
                    "device": device,
                    "epoch": epoch,
                    "stream": stream,
                    "first": st.first,
                    "top": st.top,
                    "above": [list(r) for r in _ranges(st.above)],
                    "before": [list(r) for r in _ranges(st.before)],
                    "lost": [list(r) for r in st.lost],
                    "first_seq": st.first_seq,
                    "first_held": st.first_held,
                    "last_issued": st.last_issued,
                }
            )
        return {"version": STATE_VERSION, "streams": streams}

    def resume(self, state: Mapping[str, Any]) -> None:
        """Go on from :meth:`state`: a seq at or below a stream's contiguous one is a
        duplicate, a hole between it and the next seq seen is a gap. ``ValueError`` (saying
        what) when ``state`` is not one."""
        if state.get("version") != STATE_VERSION or not isinstance(state.get("streams"), list):
            raise ValueError(f"not a subscriber state of version {STATE_VERSION}")
        streams: dict[StreamKey, _Stream] = {}
        for item in state["streams"]:
            if not isinstance(item, Mapping):
                raise ValueError("a stream is not an object")
            key = (item.get("device"), item.get("epoch"), item.get("stream"))
            if not all(isinstance(k, str) for k in key):
                raise ValueError(f"stream {key!r}: device, epoch and stream must be strings")
            first, top = item.get("first"), item.get("top")
            if not (first is None or _is_seq(first)) or not _is_seq(top):
                raise ValueError(f"stream {key!r}: bad first/top {first!r}/{top!r}")
            st = _Stream(first=first, top=top)
            st.above = set(self._expand(item.get("above"), key))
            st.before = set(self._expand(item.get("before"), key))
            st.lost = [(a, b) for a, b in self._pairs(item.get("lost"), key)][-self.max_pending :]
            for name in ("first_seq", "first_held", "last_issued"):
                value = item.get(name)
                if value is not None and not _is_seq(value):
                    raise ValueError(f"stream {key!r}: bad {name} {value!r}")
                setattr(st, name, value)
            streams[(str(key[0]), str(key[1]), str(key[2]))] = st
        self._streams.update(streams)
        self.changes += 1

    def _pairs(self, value: Any, key: object) -> list[Range]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(
            isinstance(r, list) and len(r) == 2 and all(_is_seq(x) for x in r) and r[0] <= r[1] for r in value
        ):
            raise ValueError(f"stream {key!r}: ranges must be [[low, high], ...]")
        return [(int(r[0]), int(r[1])) for r in value]

    def _expand(self, value: Any, key: object) -> list[int]:
        seqs: list[int] = []
        for a, b in self._pairs(value, key):
            if len(seqs) + (b - a + 1) > self.max_pending:
                raise ValueError(f"stream {key!r}: more than {self.max_pending} seqs kept")
            seqs.extend(range(a, b + 1))
        return seqs


def _show(ranges: Iterable[Range]) -> str:
    ranges = list(ranges)
    shown = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:SHOWN_RANGES])
    more = f" (+{len(ranges) - SHOWN_RANGES} more ranges)" if len(ranges) > SHOWN_RANGES else ""
    return shown + more


__all__ = ["MAX_PENDING", "RESULTS", "Key", "StreamGaps", "StreamKey", "StreamTracker"]
