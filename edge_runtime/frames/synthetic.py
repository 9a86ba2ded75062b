"""Synthetic frames (numpy only): moving coloured shapes over a noisy background, the same on every run.

``SOURCE`` ``synthetic[:WxH]`` (640x480 by default), RGB. Frame ``n`` is always the same image,
so tests, benchmarks and calibration without a camera are reproducible.

Example::

    with SyntheticSource(320, 240, max_frames=100) as source:
        for frame in source:
            ...  # frame.image: (240, 320, 3) uint8 RGB
    SyntheticSource(320, 240).render(7)  # frame 7 as an array
"""

from __future__ import annotations

import math

import numpy as np

from edge_runtime.frames.source import FrameSource

DEFAULT_SYNTHETIC_SIZE = (640, 480)
_BAND_ROWS = 32


def _bounce(position: int, span: int) -> int:
    """``position`` folded back and forth over ``0..span``."""
    if span <= 0:
        return 0
    phase = position % (2 * span)
    return phase if phase <= span else 2 * span - phase


class SyntheticSource(FrameSource):
    """Deterministic RGB frames (numpy only): a red square, a green disc and a blue triangle
    moving over a noisy grey gradient. Frame ``n`` is the same image on every run."""

    _BACKGROUNDS = 4

    def __init__(
        self,
        width: int = DEFAULT_SYNTHETIC_SIZE[0],
        height: int = DEFAULT_SYNTHETIC_SIZE[1],
        *,
        fps: float | None = None,
        max_frames: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(f"synthetic:{width}x{height}", fps=fps, max_frames=max_frames)
        self.width, self.height = width, height
        rng = np.random.default_rng(seed)
        gradient = np.linspace(70.0, 150.0, height, dtype=np.float32)[:, None, None]
        self._backgrounds = []
        for _ in range(self._BACKGROUNDS):
            # Band by band: the same values as one (height, width, 3) draw (the generator's
            # stream is sequential) without a float64 copy of the whole frame, which would
            # stay in the daemon's peak memory.
            background = np.empty((height, width, 3), np.uint8)
            for top in range(0, height, _BAND_ROWS):
                rows = min(_BAND_ROWS, height - top)
                noise = rng.normal(0.0, 12.0, (rows, width, 3)).astype(np.float32)
                background[top : top + rows] = np.clip(gradient[top : top + rows] + noise, 0, 255)
            self._backgrounds.append(background)

    def render(self, frame_id: int) -> np.ndarray:
        """Frame ``frame_id`` as a new (height, width, 3) uint8 RGB array."""
        w, h = self.width, self.height
        image = self._backgrounds[frame_id % self._BACKGROUNDS].copy()
        unit = max(1, min(w, h) // 8)
        # Red square sliding left and right in the upper third.
        side = max(1, unit)
        x = _bounce(frame_id * max(1, w // 64), w - side)
        y = min(h - side, h // 4)
        image[y : y + side, x : x + side] = (220, 40, 40)
        # Green disc going round an ellipse.
        radius = max(1, unit // 2 + 1)
        angle = frame_id * 2.0 * math.pi / 90.0
        cx, cy = int(w / 2 + w / 4 * math.cos(angle)), int(h / 2 + h / 4 * math.sin(angle))
        x0, x1, y0, y1 = max(0, cx - radius), min(w, cx + radius + 1), max(0, cy - radius), min(h, cy + radius + 1)
        if x0 < x1 and y0 < y1:
            yy, xx = np.ogrid[y0:y1, x0:x1]
            image[y0:y1, x0:x1][(xx - cx) ** 2 + (yy - cy) ** 2 <= radius * radius] = (40, 200, 60)
        # Blue triangle (apex up) sliding up and down on the right.
        tri = max(1, unit + unit // 2)
        top = _bounce(frame_id * max(1, h // 48), h - tri)
        cx = max(0, w - 1 - w // 6)
        x0, x1, y1 = max(0, cx - tri // 2), min(w, cx + tri // 2 + 1), min(h, top + tri)
        yy, xx = np.ogrid[top:y1, x0:x1]
        image[top:y1, x0:x1][np.abs(xx - cx) * 2 <= (yy - top)] = (40, 60, 220)
        return image

    def _capture(self) -> tuple[np.ndarray, str] | None:
        return self.render(self._next_id), "RGB"
