"""Step-by-step progress for long exporter work, through logging.

Each step logs when it starts and how it ended (time, and a detail such as the size of
what it wrote), so a user watching ``edge-export`` sees where the time goes::

    steps = Steps(total=5)
    with steps.step("loading model") as step:
        model = load(...)
        step.detail = "12 nodes"
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

logger = logging.getLogger("exporter")


def format_bytes(size: int) -> str:
    """``1536`` → ``"1.5 KiB"``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


@dataclass
class Step:
    """A running step; set ``detail`` to say what it produced."""

    title: str
    detail: str = ""


class Steps:
    """Numbered steps ``[i/n]`` logged at INFO with their duration."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0

    @contextmanager
    def step(self, title: str) -> Iterator[Step]:
        """Log the start and end of one step; failures are logged and re-raised."""
        self.done += 1
        prefix = f"[{self.done}/{self.total}]"
        logger.info("%s %s ...", prefix, title)
        current = Step(title)
        start = time.perf_counter()
        try:
            yield current
        except Exception:
            logger.info("%s %s failed after %.2f s", prefix, title, time.perf_counter() - start)
            raise
        suffix = f": {current.detail}" if current.detail else ""
        logger.info("%s %s done in %.2f s%s", prefix, title, time.perf_counter() - start, suffix)
