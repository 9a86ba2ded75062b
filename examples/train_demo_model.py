"""Train the small multi-task demo model and export it to ONNX.

The demo model looks at a 128x128 RGB frame holding one coloured shape on a noisy
background and answers three questions at once, one head each, on a shared trunk:

* ``shape``: which shape it is, ``circle`` / ``square`` / ``triangle`` (``shape_logits``, N x 3)
* ``box``: where it is, normalised ``[x1, y1, x2, y2]`` in 0..1 (``box``, N x 4)
* ``mask``: which pixels it covers, ``background`` / ``shape`` (``mask_logits``, N x 2 x 128 x 128)

Everything is synthetic and seeded, so a re-run gives a similar model. Usage::

    python examples/train_demo_model.py                      # 90 s of training, ~100 s in all
    python examples/train_demo_model.py --seconds 60 --seed 1 --output /tmp/demo.onnx

It trains for ``--seconds`` of wall time (CPU, 2 threads; the budget, not a step count,
so a slower or busier machine sees fewer frames), evaluates on held-back frames
drawn with a different seed, writes the metrics to ``examples/demo_metrics.json``, exports
``examples/demo_multitask.onnx`` (opset 17, dynamic batch, weights inline) and checks
that onnxruntime reproduces the PyTorch outputs to 1e-4 for batch 1 and batch 2.

The pieces are importable, e.g. by tests::

    from examples.train_demo_model import DemoMultiTaskNet, make_frames, normalise, LABELS
    images, classes, boxes, masks = make_frames(8, seed=0)
    shape_logits, box, mask_logits = DemoMultiTaskNet().eval()(torch.from_numpy(normalise(images)))

Input: ``(uint8 / 255 - mean) / std`` per RGB channel, NCHW float32, with the ImageNet
``MEAN`` and ``STD`` below (see ``examples/demo_input.toml``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger("train_demo_model")

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "demo_multitask.onnx"
DEFAULT_METRICS = HERE / "demo_metrics.json"

#: Class names of the ``shape`` head, in logit order.
LABELS: tuple[str, ...] = ("circle", "square", "triangle")
#: Class names of the ``mask`` head, in channel order.
MASK_CLASSES: tuple[str, ...] = ("background", "shape")

IMAGE_SIZE = 128
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["shape_logits", "box", "mask_logits"]
OPSET = 17

MIN_SIZE, MAX_SIZE = 16.0, 56.0  # circle diameter, square side or triangle side, in pixels
#: circumradius / size for circle, square (regular 4-gon), triangle (regular 3-gon)
_CIRCUMRADIUS = np.array([0.5, 1.0 / math.sqrt(2.0), 1.0 / math.sqrt(3.0)])
MIN_CONTRAST = 110.0  # minimum RGB distance between the shape colour and the background colour
#: Weights of the loss terms (see :func:`multitask_loss`).
LOSS_WEIGHTS: dict[str, float] = {"cls": 1.0, "l1": 5.0, "giou": 1.0, "mask": 1.0, "dice": 1.0}
EVAL_SEED = 1_000_003  # seed of the held-back evaluation frames (training never uses it)


# --------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------


def _polygon_mask(
    px: np.ndarray,
    py: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    radius: np.ndarray,
    angle: np.ndarray,
    sides: int,
) -> np.ndarray:
    """Masks ``(m, H, W)`` of regular ``sides``-gons with circumradius ``radius`` (all ``(m,)``)."""
    k = np.arange(sides, dtype=np.float32)
    theta = angle[:, None] + 2.0 * np.pi * k[None, :] / sides  # (m, sides), counter-clockwise
    vx = cx[:, None] + radius[:, None] * np.cos(theta)
    vy = cy[:, None] + radius[:, None] * np.sin(theta)
    inside = np.ones((len(cx), py.shape[-2], px.shape[-1]), dtype=bool)
    for i in range(sides):
        x1, y1 = vx[:, i, None, None], vy[:, i, None, None]
        x2, y2 = vx[:, (i + 1) % sides, None, None], vy[:, (i + 1) % sides, None, None]
        inside &= (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1) >= 0.0
    return inside


def _contrasting_colours(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A random colour per row of ``background`` at least ``MIN_CONTRAST`` away from it."""
    colour = rng.uniform(0, 255, size=background.shape)
    for _ in range(100):
        bad = np.linalg.norm(colour - background, axis=1) < MIN_CONTRAST
        if not bad.any():
            break
        colour[bad] = rng.uniform(0, 255, size=(int(bad.sum()), 3))
    else:  # pragma: no cover - practically unreachable: push the colour to the far corner
        bad = np.linalg.norm(colour - background, axis=1) < MIN_CONTRAST
        colour[bad] = np.where(background[bad] > 127.5, 0.0, 255.0)
    return colour


def make_frames(
    n: int,
    seed: int,
    *,
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` synthetic frames, deterministic for a given ``seed``.

    Each frame has a random base colour plus a linear gradient and Gaussian noise, and one
    circle, square or triangle (random size 16-56 px: diameter or side length; random
    rotation, random contrasting colour) placed fully inside the frame.

    Returns ``(images, classes, boxes, masks)``: images ``uint8 (n, 128, 128, 3)`` RGB,
    classes ``int64 (n,)`` indexing :data:`LABELS`, boxes ``float32 (n, 4)`` normalised
    ``[x1, y1, x2, y2]`` (the tight pixel box of the mask, edges in 0..1), and masks
    ``uint8 (n, 128, 128)`` with 1 on the shape.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    size = IMAGE_SIZE
    classes = rng.integers(0, len(LABELS), size=n)
    radius = rng.uniform(MIN_SIZE, MAX_SIZE, size=n) * _CIRCUMRADIUS[classes]
    cx = rng.uniform(radius + 1.0, size - radius - 1.0)
    cy = rng.uniform(radius + 1.0, size - radius - 1.0)
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    background = rng.uniform(0, 255, size=(n, 3))
    colour = _contrasting_colours(rng, background).astype(np.float32)
    background = background.astype(np.float32)
    grad_angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    grad_amplitude = rng.uniform(0.0, 60.0, size=n)  # brightness change across the frame
    grad_x = (np.cos(grad_angle) * grad_amplitude).astype(np.float32)
    grad_y = (np.sin(grad_angle) * grad_amplitude).astype(np.float32)
    noise_sigma = rng.uniform(2.0, 16.0, size=n).astype(np.float32)

    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=np.uint8)
    coords = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
    px = coords[None, None, :]
    py = coords[None, :, None]
    unit = coords / size - 0.5  # -0.5..0.5
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        m = sl.stop - sl.start
        c = classes[sl]
        r = radius[sl].astype(np.float32)
        x0 = cx[sl].astype(np.float32)
        y0 = cy[sl].astype(np.float32)
        a = angle[sl].astype(np.float32)
        mask = np.zeros((m, size, size), dtype=bool)
        for cls, sides in ((0, 0), (1, 4), (2, 3)):
            sel = np.flatnonzero(c == cls)
            if sel.size == 0:
                continue
            if sides == 0:
                d2 = (px - x0[sel, None, None]) ** 2 + (py - y0[sel, None, None]) ** 2
                mask[sel] = d2 <= (r[sel, None, None] ** 2)
            else:
                mask[sel] = _polygon_mask(px, py, x0[sel], y0[sel], r[sel], a[sel], sides)
        # background: base colour + linear gradient along a random direction
        ramp = grad_x[sl, None, None] * unit[None, None, :] + grad_y[sl, None, None] * unit[:, None]
        frame = background[sl, None, None, :] + ramp[..., None]  # (m, H, W, 3) float32
        frame = np.where(mask[..., None], colour[sl, None, None, :], frame)
        noise = rng.standard_normal((m, size, size, 3), dtype=np.float32)
        noise *= noise_sigma[sl, None, None, None]
        frame += noise + 0.5  # + 0.5: round to nearest in the cast below
        images[sl] = np.clip(frame, 0, 255).astype(np.uint8)
        masks[sl] = mask

    any_x = np.asarray(masks.any(axis=1))  # (n, W)
    any_y = np.asarray(masks.any(axis=2))  # (n, H)
    x1 = any_x.argmax(axis=1)
    x2 = size - any_x[:, ::-1].argmax(axis=1)
    y1 = any_y.argmax(axis=1)
    y2 = size - any_y[:, ::-1].argmax(axis=1)
    boxes = (np.stack([x1, y1, x2, y2], axis=1) / size).astype(np.float32)
    return images, classes.astype(np.int64), boxes, masks


def normalise(images: np.ndarray) -> np.ndarray:
    """``uint8 (N, H, W, 3)`` RGB frames -> ``float32 (N, 3, H, W)`` ``(x / 255 - MEAN) / STD``."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images of shape (N, H, W, 3), got {images.shape}")
    x = images.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------


def conv_bn_relu(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """``Conv2d`` (no bias) + ``BatchNorm2d`` + ``ReLU``; folded into one Conv on ONNX export."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ShapeHead(nn.Module):
    """Classification: features ``(N, C, 8, 8)`` -> ``shape_logits (N, 3)``."""

    def __init__(self, channels: int, num_classes: int = len(LABELS)) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(inplace=True))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = self.conv(features)
        return self.fc(torch.flatten(F.adaptive_max_pool2d(h, 1), 1))


class BoxHead(nn.Module):
    """Box regression: features ``(N, C, 8, 8)`` -> sigmoid ``box (N, 4)`` as ``x1, y1, x2, y2``."""

    def __init__(self, channels: int, grid: int = 8) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(channels, 8, 1), nn.ReLU(inplace=True))
        self.fc = nn.Sequential(
            nn.Linear(8 * grid * grid, 16),
            nn.ReLU(inplace=True),
            nn.Linear(16, 4),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(torch.flatten(self.reduce(features), 1)))


class MaskHead(nn.Module):
    """Segmentation: features ``(N, C, 8, 8)`` -> ``mask_logits (N, 2, H, W)``.

    Decodes to 1/4 of the input resolution with two learned 2x upsampling stages, then
    resizes bilinearly to the spatial size of ``image`` (read from its shape only, so the
    exported head takes the model input through a ``Shape`` node).
    """

    def __init__(self, channels: int, num_classes: int = len(MASK_CLASSES)) -> None:
        super().__init__()
        self.decode = nn.Sequential(
            nn.Conv2d(channels, 24, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(24, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, num_classes, 1),
        )

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        m = self.decode(features)
        return F.interpolate(m, size=image.shape[-2:], mode="bilinear", align_corners=False)


class DemoMultiTaskNet(nn.Module):
    """Shared CNN trunk (128x128 -> 8x8 features) and three heads: ``shape``, ``box``, ``mask``.

    ``forward(x)`` computes ``f = self.trunk(x)`` once and returns
    ``(shape_logits (N, 3), box (N, 4), mask_logits (N, 2, H, W))``.
    """

    def __init__(self, width: int = 48) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            conv_bn_relu(3, 16, stride=2),  # 64x64
            conv_bn_relu(16, 24, stride=2),  # 32x32
            conv_bn_relu(24, 32),  # 32x32
            conv_bn_relu(32, 48, stride=2),  # 16x16
            conv_bn_relu(48, 48),  # 16x16
            conv_bn_relu(48, width, stride=2),  # 8x8
        )
        self.heads = nn.ModuleDict(
            {
                "shape": ShapeHead(width),
                "box": BoxHead(width),
                "mask": MaskHead(width),
            }
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.trunk(x)
        shape_logits = self.heads["shape"](f)
        box = self.heads["box"](f)
        mask_logits = self.heads["mask"](f, x)
        return shape_logits, box, mask_logits


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------
# Losses and metrics
# --------------------------------------------------------------------------------------


def box_iou_xyxy(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Element-wise IoU and GIoU of ``(N, 4)`` xyxy boxes (any order of corners is clamped)."""
    ix1 = torch.maximum(a[:, 0], b[:, 0])
    iy1 = torch.maximum(a[:, 1], b[:, 1])
    ix2 = torch.minimum(a[:, 2], b[:, 2])
    iy2 = torch.minimum(a[:, 3], b[:, 3])
    inter = (ix2 - ix1).clamp(min=0) * (iy2 - iy1).clamp(min=0)
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    union = area_a + area_b - inter
    iou = inter / union.clamp(min=1e-9)
    ex1 = torch.minimum(a[:, 0], b[:, 0])
    ey1 = torch.minimum(a[:, 1], b[:, 1])
    ex2 = torch.maximum(a[:, 2], b[:, 2])
    ey2 = torch.maximum(a[:, 3], b[:, 3])
    enclose = ((ex2 - ex1) * (ey2 - ey1)).clamp(min=1e-9)
    giou = iou - (enclose - union) / enclose
    return iou, giou


def multitask_loss(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    classes: torch.Tensor,
    boxes: torch.Tensor,
    masks: torch.Tensor,
    weights: dict[str, float] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of class CE, box SmoothL1 + GIoU, and mask CE + soft Dice; plus the parts.

    ``weights`` overrides entries of :data:`LOSS_WEIGHTS` (keys ``cls l1 giou mask dice``).
    """
    w = {**LOSS_WEIGHTS, **(weights or {})}
    shape_logits, box, mask_logits = outputs
    _, giou = box_iou_xyxy(box, boxes)
    prob = mask_logits.softmax(dim=1)[:, 1]
    target = masks.float()
    inter = (prob * target).sum(dim=(1, 2))
    dice = 1.0 - (2.0 * inter + 1.0) / (prob.sum(dim=(1, 2)) + target.sum(dim=(1, 2)) + 1.0)
    losses = {
        "cls": F.cross_entropy(shape_logits, classes),
        "l1": F.smooth_l1_loss(box, boxes, beta=0.02),
        "giou": (1.0 - giou).mean(),
        "mask": F.cross_entropy(mask_logits, masks),
        "dice": dice.mean(),
    }
    total = sum((w[name] * value for name, value in losses.items()), torch.zeros(()))
    parts = {name: value.item() for name, value in losses.items()}
    return total, parts


@torch.no_grad()
def evaluate(
    model: nn.Module,
    n: int = 1000,
    seed: int = EVAL_SEED,
    batch: int = 100,
) -> dict[str, float]:
    """Metrics on ``n`` held-back frames drawn with ``seed``.

    ``classification_accuracy``; ``box_iou_mean`` (mean IoU of predicted and true boxes);
    ``mask_iou_shape`` (mean over frames of the IoU of the ``shape`` class, argmax of the
    logits); ``mask_iou_shape_dataset`` (the same IoU over all pixels pooled);
    ``mask_miou`` (mean of the pooled IoU of ``background`` and ``shape``);
    ``mask_pixel_accuracy``.
    """
    model.eval()
    images, classes, boxes, masks = make_frames(n, seed)
    correct = 0
    box_ious: list[np.ndarray] = []
    frame_ious: list[np.ndarray] = []
    inter_fg = union_fg = inter_bg = union_bg = 0
    pixels_right = 0
    for start in range(0, n, batch):
        sl = slice(start, min(n, start + batch))
        x = torch.from_numpy(normalise(images[sl]))
        shape_logits, box, mask_logits = model(x)
        correct += int((shape_logits.argmax(1).numpy() == classes[sl]).sum())
        iou, _ = box_iou_xyxy(box, torch.from_numpy(boxes[sl]))
        box_ious.append(iou.numpy())
        pred = mask_logits.argmax(1).numpy().astype(bool)
        true = masks[sl].astype(bool)
        inter = (pred & true).sum(axis=(1, 2))
        union = (pred | true).sum(axis=(1, 2))
        frame_ious.append(inter / np.maximum(union, 1))
        inter_fg += int(inter.sum())
        union_fg += int(union.sum())
        inter_bg += int((~pred & ~true).sum())
        union_bg += int((~pred | ~true).sum())
        pixels_right += int((pred == true).sum())
    iou_fg = inter_fg / max(union_fg, 1)
    iou_bg = inter_bg / max(union_bg, 1)
    return {
        "frames": n,
        "classification_accuracy": correct / n,
        "box_iou_mean": float(np.concatenate(box_ious).mean()),
        "mask_iou_shape": float(np.concatenate(frame_ious).mean()),
        "mask_iou_shape_dataset": iou_fg,
        "mask_miou": (iou_fg + iou_bg) / 2.0,
        "mask_pixel_accuracy": pixels_right / (n * IMAGE_SIZE * IMAGE_SIZE),
    }


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def _batch_seed(seed: int, step: int) -> int:
    """A per-step data seed derived from ``(seed, step)``; disjoint in practice from EVAL_SEED."""
    return int(np.random.SeedSequence([seed, 7, step]).generate_state(1)[0])


def _training_batch(seed: int, step: int, batch_size: int) -> tuple[torch.Tensor, ...]:
    """Batch ``step`` of the training stream: ``(x, classes, boxes, masks)``, x channels-last."""
    images, classes, boxes, masks = make_frames(batch_size, _batch_seed(seed, step))
    x = torch.from_numpy(normalise(images)).contiguous(memory_format=torch.channels_last)
    return x, torch.from_numpy(classes), torch.from_numpy(boxes), torch.from_numpy(masks).long()


def train(
    model: nn.Module,
    seconds: float,
    seed: int,
    *,
    batch_size: int = 32,
    lr: float = 3e-3,
    log_every: float = 10.0,
) -> dict[str, Any]:
    """Train ``model`` with Adam for ``seconds`` of wall time on fresh synthetic batches.

    Batch ``k`` is drawn with a seed derived from ``(seed, k)``, in a background thread
    while step ``k - 1`` trains. The learning rate warms up over the first 5 % of the
    budget and then follows a cosine decay over elapsed *time*, so the schedule completes
    whatever the machine speed (a slower or busier machine sees fewer frames). Returns a
    summary (steps, frames seen, wall time, final loss parts).
    """
    torch.manual_seed(seed)
    model.train()
    # channels-last: ~20 % faster convolutions on CPU (Module.to's stubs omit memory_format)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    next_log = start + log_every
    step = 0
    parts: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=1) as prefetch:
        pending = prefetch.submit(_training_batch, seed, 0, batch_size)
        while True:
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
            frac = elapsed / seconds
            if frac < 0.05:
                scale = frac / 0.05
            else:
                scale = 0.5 * (1.0 + math.cos(math.pi * (frac - 0.05) / 0.95))
            for group in optimiser.param_groups:
                group["lr"] = lr * max(scale, 0.02)
            x, classes, boxes, masks = pending.result()
            pending = prefetch.submit(_training_batch, seed, step + 1, batch_size)
            loss, parts = multitask_loss(model(x), classes, boxes, masks)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            now = time.perf_counter()
            if now >= next_log:
                next_log = now + log_every
                summary = " ".join(f"{k} {v:.3f}" for k, v in parts.items())
                elapsed = now - start
                logger.info("%5.1fs step %4d loss %.3f (%s)", elapsed, step, loss.item(), summary)
    wall = time.perf_counter() - start
    model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    logger.info("trained %d steps (%d frames) in %.1f s", step, step * batch_size, wall)
    return {
        "steps": step,
        "batch_size": batch_size,
        "frames_seen": step * batch_size,
        "wall_seconds": round(wall, 1),
        "final_loss_parts": {k: round(v, 4) for k, v in parts.items()},
    }


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------


def export_onnx(model: nn.Module, path: Path) -> None:
    """Export ``model`` (eval mode) to ``path``: opset 17, dynamic batch, weights inline.

    Uses the TorchScript exporter (``dynamo=False``), which folds BatchNorm into the convs.
    It leaves the mask output's C, H, W symbolic (they come from ``Shape(image)`` at run
    time); as the input's C, H, W are fixed, the declared output shapes are then replaced by
    the ones ONNX shape inference with data propagation finds (``["batch", 2, 128, 128]``).
    """
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.from_numpy(normalise(make_frames(1, seed=0)[0]))
    with warnings.catch_warnings():
        # dynamo=False is deliberate (BatchNorm folding, stable node names): hush its notice
        warnings.filterwarnings(
            "ignore",
            message=".*legacy TorchScript-based ONNX export",
            category=DeprecationWarning,
        )
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes={name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES},
        )
    proto = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    for declared, found in zip(proto.graph.output, inferred.graph.output, strict=True):
        declared_dims = declared.type.tensor_type.shape.dim
        found_dims = found.type.tensor_type.shape.dim
        for dim, new in zip(declared_dims, found_dims, strict=True):
            if dim.dim_param != "batch" and new.HasField("dim_value"):
                dim.dim_value = new.dim_value  # also clears the symbolic dim_param
    onnx.save(proto, str(path))
    leftovers = [p for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path]
    if leftovers:
        raise RuntimeError(f"export wrote external data files {leftovers}; expected weights inline")


def check_onnx(model: nn.Module, path: Path, atol: float = 1e-4) -> dict[str, Any]:
    """Check the ONNX file: inline weights, and onnxruntime matches PyTorch for batch 1 and 2.

    Raises ``RuntimeError`` on any mismatch. Returns a description of the graph interface.
    """
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(proto)
    on_disk = onnx.TensorProto.EXTERNAL
    external = [t.name for t in proto.graph.initializer if t.data_location == on_disk]
    if external:
        raise RuntimeError(f"{path}: initializers stored externally: {external[:5]}")

    def describe(values: Any) -> dict[str, list[int | str]]:
        shapes: dict[str, list[int | str]] = {}
        for value in values:
            dims = value.type.tensor_type.shape.dim
            shapes[value.name] = [d.dim_param or d.dim_value for d in dims]
        return shapes

    info = {
        "inputs": describe(proto.graph.input),
        "outputs": describe(proto.graph.output),
        "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "ir_version": proto.ir_version,
    }
    if list(info["inputs"]) != INPUT_NAMES or list(info["outputs"]) != OUTPUT_NAMES:
        raise RuntimeError(f"{path}: unexpected graph interface {info}")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model.eval()
    for batch, seed in ((1, 11), (2, 12)):
        x = normalise(make_frames(batch, seed=seed)[0])
        with torch.no_grad():
            expected = [t.numpy() for t in model(torch.from_numpy(x))]
        got = session.run(OUTPUT_NAMES, {INPUT_NAMES[0]: x})
        for name, e, g in zip(OUTPUT_NAMES, expected, got, strict=True):
            if e.shape != g.shape:
                raise RuntimeError(
                    f"{path}: {name} has shape {g.shape} in onnxruntime, {e.shape} in torch",
                )
            diff = float(np.abs(e - g).max())
            if not diff <= atol:
                raise RuntimeError(
                    f"{path}: {name} differs from torch by {diff:.2e} (> {atol}) at batch {batch}",
                )
            logger.info("onnxruntime check batch %d %-12s max |diff| %.2e", batch, name, diff)
    return info


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Train the small multi-task demo CNN (shape class, box, mask) on synthetic frames "
            "for a fixed wall-time budget on the CPU, evaluate it on held-back frames, and "
            "export it to ONNX (opset 17, dynamic batch) checked against onnxruntime."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=90.0, help="training wall-time budget")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="ONNX file to write")
    parser.add_argument(
        "--metrics",
        type=Path,
        default=DEFAULT_METRICS,
        help="JSON file for the held-back metrics",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and training data")
    parser.add_argument("--eval-frames", type=int, default=1000, help="number of held-back frames")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak Adam learning rate")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    if args.eval_frames < 1:
        parser.error("--eval-frames must be >= 1")
    return args


def _cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = DemoMultiTaskNet()
    params = count_parameters(model)
    budget = f"{args.seconds:g} s on {args.threads} thread(s)"
    print(f"DemoMultiTaskNet: {params} parameters; training for {budget}")
    summary = train(model, args.seconds, args.seed, batch_size=args.batch_size, lr=args.lr)

    print(f"evaluating on {args.eval_frames} held-back frames (seed {EVAL_SEED})")
    metrics = evaluate(model, n=args.eval_frames, seed=EVAL_SEED)
    for key, value in metrics.items():
        print(f"  {key:26s} {value:.4f}" if isinstance(value, float) else f"  {key:26s} {value}")

    print(f"exporting {args.output}")
    export_onnx(model, args.output)
    info = check_onnx(model, args.output)
    size = args.output.stat().st_size
    print(f"  {size} bytes, opset {info['opset']}, IR {info['ir_version']}")
    print(f"  inputs {info['inputs']}  outputs {info['outputs']}")
    print("  onnxruntime matches torch to 1e-4 (batch 1 and 2)")

    report = {
        "metrics": {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()},
        "eval_seed": EVAL_SEED,
        "training": {
            "seed": args.seed,
            "seconds_budget": args.seconds,
            "threads": args.threads,
            "lr": args.lr,
            **summary,
        },
        "model": {"parameters": params, "onnx_bytes": size, **info},
        "labels": list(LABELS),
        "mask_classes": list(MASK_CLASSES),
        "environment": {
            "machine": platform.machine(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
