"""Calibration data for quantization: frames → the bundle's model inputs, fed to ONNX Runtime.

:func:`load_calibration` reads one of

- a folder of images (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``; sorted by name, not recursive),
  decoded to RGB by :func:`edge_runtime.frames.images.read_image` (OpenCV, else Pillow, else
  numpy for PNG and uncompressed BMP), as the device's image-folder source decodes them; unreadable
  files are skipped and named;
- a ``.npy`` array: model inputs already preprocessed, ``(N, *spec.shape[1:])`` in a float
  dtype, or raw RGB frames ``(N, H, W, 3)`` / grey frames ``(N, H, W)`` in ``uint8``;
- ``"generated"`` (or ``"synthetic"``, or ``None``): synthetic frames, for a quick try only;

and passes every frame through :class:`edge_runtime.frames.preprocess.Preprocessor` with the
bundle's input spec, exactly as the runtime does on the device. Frames that are all identical
after preprocessing (two or more) are refused; a spec whose preprocessing was ``assumed`` at
split (nothing stated it) is calibrated on with a warning. The result is a
:class:`CalibrationSet` whose :meth:`~CalibrationSet.split` holds back every k-th frame for
the fidelity check, and :class:`ArrayDataReader` feeds arrays to
``onnxruntime.quantization.quantize_static`` one sample at a time (ORT's
``CalibrationDataReader`` contract).

Example::

    from edge_runtime.bundle.reader import load_bundle
    from exporter.calibration import ArrayDataReader, load_calibration

    spec = load_bundle("build/demo_bundle").manifest.input
    calib = load_calibration("calib/", spec, limit=64)
    frames, held_out = calib.split(0.25)
    reader = ArrayDataReader({spec.name: frames})

CLI: ``edge-export quantize build/demo_bundle --calib calib/`` (or ``--calib frames.npy``,
``--calib generated``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edge_runtime.bundle.specs import InputSpec
from edge_runtime.errors import ConfigError
from edge_runtime.frames.frame import InvalidFrameError
from edge_runtime.frames.images import ImageReadError, read_image, require_image_decoder
from edge_runtime.frames.preprocess import Preprocessor
from edge_runtime.frames.synthetic import DEFAULT_SYNTHETIC_SIZE, SyntheticSource
from exporter.specs import describe_input

logger = logging.getLogger(__name__)

#: Image files a calibration folder contributes (case-insensitive).
CALIBRATION_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
#: ``source`` strings that ask for generated (synthetic) frames.
GENERATED_SOURCES = ("generated", "synthetic")
DEFAULT_GENERATED_FRAMES = 32
CALIBRATION_FORMS = (
    f"a folder of images ({', '.join(CALIBRATION_IMAGE_SUFFIXES)}), "
    "a .npy array (N, *input shape without batch) float / (N, H, W, 3) or (N, H, W) uint8, "
    "or 'generated' for synthetic frames"
)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CalibrationSet:
    """Preprocessed calibration inputs and where they came from.

    ``inputs``: ``(N, *spec.shape[1:])``, the spec's dtype (float32 for float models), N >= 1.
    ``source``: one line for people, e.g. ``"folder calib: 48 images (2 unreadable, skipped)"``.
    ``skipped``: the files that could not be read, each with its reason (``"calib/x.jpg: not an image"``).
    ``generated``: true for synthetic frames (a quick try; real frames calibrate better).
    ``frame``: frame ``i`` as it was read, ``(H, W, 3) uint8`` RGB (what the self-test stores), or
    ``None`` when the data were model inputs already.
    """

    inputs: np.ndarray
    source: str
    skipped: tuple[str, ...] = ()
    generated: bool = False
    frame: Callable[[int], np.ndarray] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, np.ndarray) or self.inputs.ndim < 1 or len(self.inputs) == 0:
            raise ConfigError(f"calibration data ({self.source}): no frames")

    def __len__(self) -> int:
        return len(self.inputs)

    def split(
        self, held_out: float = 0.25, *, min_calibration: int = 4, min_held_out: int = 2
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(calibration, held_out)`` arrays: every k-th frame is held out (deterministic, not random).

        About ``held_out`` of the frames (rounded, at least ``min_held_out``, leaving at least
        ``min_calibration``) are held out, evenly spaced: with 8 frames and 0.25, frames 3 and 7.
        Raises :class:`ConfigError` naming the counts when there are fewer frames than
        ``min_calibration + min_held_out``.
        """
        if isinstance(held_out, bool) or not isinstance(held_out, (int, float)) or not 0 < held_out < 1:
            raise ConfigError(f"held-out fraction must be a number between 0 and 1 (exclusive), got {held_out!r}")
        for name, value in (("min_calibration", min_calibration), ("min_held_out", min_held_out)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        total = len(self.inputs)
        needed = min_calibration + min_held_out
        if total < needed:
            raise ConfigError(
                f"calibration data ({self.source}): {total} frame{'s' if total != 1 else ''} are too few to hold "
                f"some back for the fidelity check: need at least {needed} ({min_calibration} for calibration + "
                f"{min_held_out} held out); give more frames"
            )
        count = min(max(math.floor(total * held_out + 0.5), min_held_out), total - min_calibration)
        held = (np.arange(1, count + 1) * total) // count - 1  # every (total/count)-th frame, ending on the last
        mask = np.zeros(total, dtype=bool)
        mask[held] = True
        return self.inputs[~mask], self.inputs[mask]

    def held_out_indices(self, held_out: float = 0.25) -> np.ndarray:
        """The indices of the frames :meth:`split` holds back (same arguments' defaults)."""
        total = len(self.inputs)
        marked = CalibrationSet(np.arange(total, dtype=np.int64), self.source)
        return marked.split(held_out)[1]

    def selftest_frames(self, held_out: float, count: int) -> list[np.ndarray] | None:
        """``count`` of the frames :meth:`split` holds back (evenly spaced among them), as read:
        the self-test frames of a quantized or converted bundle. ``None`` without frames."""
        if self.frame is None:
            return None
        held = self.held_out_indices(held_out)
        chosen = held[np.unique(np.linspace(0, len(held) - 1, min(count, len(held))).round().astype(int))]
        return [self.frame(int(i)) for i in chosen]


def load_calibration(
    source: str | Path | None,
    spec: InputSpec,
    *,
    limit: int | None = None,
    generated: int = DEFAULT_GENERATED_FRAMES,
    seed: int = 0,
    progress: Progress | None = None,
) -> CalibrationSet:
    """Read calibration frames from ``source`` and preprocess them with ``spec`` (see the module docstring).

    ``source``: a folder of images, a ``.npy`` file, or ``None`` / ``"generated"`` / ``"synthetic"``
    for ``generated`` synthetic frames (a folder literally named ``generated`` is ``./generated``).
    ``limit`` keeps the first N frames (files by name, rows of the array). ``seed`` varies the
    synthetic frames' noise. ``progress(done, total)`` is called after each frame is preprocessed.
    Raises :class:`ConfigError` naming the path for anything unusable (frames all identical after
    preprocessing included), and :class:`~edge_runtime.errors.BackendUnavailableError` naming an
    image and the extras to install when neither OpenCV nor Pillow is there to decode it. Logs a
    warning when ``spec.assumed`` lists preprocessing that nothing stated at split.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"calibration limit must be a positive integer, got {limit!r}")
    if spec.assumed:
        logger.warning(
            "calibrating on preprocessing that was ASSUMED at split: %s; if the model was trained otherwise, INT8 "
            "will be calibrated on the wrong input (split again with --input-spec)",
            describe_input(spec, spec.assumed),
        )
    calib = _load(source, spec, limit, generated, seed, progress)
    first = calib.inputs[0]
    if len(calib) >= 2 and all(np.array_equal(first, frame) for frame in calib.inputs[1:]):
        raise ConfigError(
            f"calibration data ({calib.source}): all {len(calib)} frames are identical after preprocessing; "
            "calibrate on varied real frames"
        )
    return calib


def _load(
    source: str | Path | None,
    spec: InputSpec,
    limit: int | None,
    generated: int,
    seed: int,
    progress: Progress | None,
) -> CalibrationSet:
    if source is None or (isinstance(source, str) and source.strip().lower() in GENERATED_SOURCES):
        if isinstance(generated, bool) or not isinstance(generated, int) or generated < 1:
            raise ConfigError(
                f"the number of generated calibration frames must be a positive integer, got {generated!r}"
            )
        return _load_generated(spec, min(generated, limit or generated), seed, progress)
    if not isinstance(source, (str, Path)) or not str(source).strip():
        raise ConfigError(f"calibration data must be {CALIBRATION_FORMS}; got {source!r}")
    path = Path(source).expanduser()
    if path.is_dir():
        return _load_folder(path, spec, limit, progress)
    if path.suffix.lower() == ".npy":
        return _load_npy(path, spec, limit, progress)
    if not path.exists():
        raise ConfigError(f"calibration data {path}: no such file or folder; give {CALIBRATION_FORMS}")
    if path.suffix.lower() in CALIBRATION_IMAGE_SUFFIXES:
        what = "a single image is not enough to calibrate on (put the images in a folder)"
    else:
        what = "neither a folder of images nor a .npy array"
    raise ConfigError(f"calibration data {path}: {what}; give {CALIBRATION_FORMS}")


# --------------------------------------------------------------------------- sources


def _empty_inputs(spec: InputSpec, count: int) -> np.ndarray:
    return np.empty((count, *spec.shape[1:]), dtype=np.dtype(spec.dtype))


def _load_generated(spec: InputSpec, count: int, seed: int, progress: Progress | None) -> CalibrationSet:
    pre = Preprocessor(spec)
    width, height = DEFAULT_SYNTHETIC_SIZE
    source = SyntheticSource(width, height, seed=seed)
    inputs = _empty_inputs(spec, count)
    try:
        for i in range(count):
            inputs[i] = pre(source.render(i), color="RGB")[0][0]
            if progress is not None:
                progress(i + 1, count)
    finally:
        source.close()
    logger.warning(
        "calibrating on %d generated synthetic frames: real frames from the deployment camera calibrate better "
        "(pass a folder of images or a .npy array: --calib DIR or --calib FRAMES.npy)",
        count,
    )
    return CalibrationSet(
        inputs,
        f"generated: {count} synthetic frames",
        generated=True,
        frame=lambda i: SyntheticSource(width, height, seed=seed).render(i),
    )


def _load_folder(folder: Path, spec: InputSpec, limit: int | None, progress: Progress | None) -> CalibrationSet:
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise ConfigError(f"calibration folder {folder}: cannot list it ({exc.strerror or exc})") from None
    images = [p for p in entries if p.suffix.lower() in CALIBRATION_IMAGE_SUFFIXES and p.is_file()]
    if not images:
        others = [p.name + ("/" if p.is_dir() else "") for p in entries]
        entries_word = "entry" if len(others) == 1 else "entries"
        found = f"found {len(others)} other {entries_word}: {_listing(others)}" if others else "it is empty"
        raise ConfigError(
            f"calibration folder {folder} has no images ({', '.join(CALIBRATION_IMAGE_SUFFIXES)}): {found}"
        )
    candidates = images[:limit] if limit is not None else images
    for path in candidates:  # the first image that needs OpenCV or Pillow says so before any work
        require_image_decoder(path, f"calibration folder {folder}: ")
    pre = Preprocessor(spec)
    inputs = _empty_inputs(spec, len(candidates))
    skipped: list[str] = []
    read: list[Path] = []
    count = 0
    for done, path in enumerate(candidates, start=1):
        try:
            inputs[count] = pre(read_image(path), color="RGB")[0][0]
            read.append(path)
            count += 1
        except ImageReadError as exc:
            skipped.append(str(exc))
        except InvalidFrameError as exc:
            skipped.append(f"{path}: {exc}")
        if progress is not None:
            progress(done, len(candidates))
    if skipped:
        logger.warning(
            "calibration folder %s: skipped %d unreadable file%s: %s",
            folder,
            len(skipped),
            "s" if len(skipped) != 1 else "",
            "; ".join(skipped),
        )
    if count == 0:
        raise ConfigError(
            f"calibration folder {folder}: none of its {len(candidates)} image files could be read: "
            f"{_listing(skipped, 5, sep='; ')}"
        )
    note = f" ({len(skipped)} unreadable, skipped)" if skipped else ""
    capped = f", the first {limit} of {len(images)}" if limit is not None and len(images) > limit else ""
    description = f"folder {folder}: {count} image{'s' if count != 1 else ''}{capped}{note}"
    logger.info("calibration data: %s", description)
    return CalibrationSet(
        inputs[:count].copy() if count < len(inputs) else inputs,
        description,
        tuple(skipped),
        frame=lambda i: read_image(read[i]),
    )


def _load_npy(path: Path, spec: InputSpec, limit: int | None, progress: Progress | None) -> CalibrationSet:
    if not path.is_file():
        what = "no such file" if not path.exists() else "not a regular file"
        raise ConfigError(f"calibration array {path}: {what}")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"calibration array {path}: not a readable .npy array ({exc})") from exc
    if not isinstance(array, np.ndarray):  # an .npz saved under a .npy name
        raise ConfigError(f"calibration array {path}: not a .npy array (an .npz archive?)")
    sample_shape = tuple(spec.shape[1:])
    preprocessed = array.ndim == len(spec.shape) and tuple(array.shape[1:]) == sample_shape
    raw = array.dtype == np.uint8 and (array.ndim == 3 or (array.ndim == 4 and array.shape[3] == 3))
    if preprocessed and array.dtype.kind == "f":
        kind = "preprocessed"
    elif raw:
        kind = "raw"
    else:
        raise ConfigError(
            f"calibration array {path}: shape {tuple(array.shape)} {array.dtype} is neither preprocessed model inputs "
            f"(N, {', '.join(map(str, sample_shape))}) in a float dtype nor raw frames (N, H, W, 3) RGB or (N, H, W) "
            "grey in uint8"
        )
    if len(array) == 0 or 0 in array.shape:
        raise ConfigError(f"calibration array {path}: shape {tuple(array.shape)} holds no frames")
    total = len(array)
    if limit is not None:
        array = array[:limit]
    count = len(array)
    capped = f", the first {count} of {total}" if count < total else ""

    if kind == "preprocessed":
        dtype = np.dtype(spec.dtype)
        if dtype.kind != "f":
            raise ConfigError(
                f"calibration array {path}: float model inputs, but the model input {spec.name!r} is {spec.dtype}; "
                "give raw uint8 frames (N, H, W, 3) instead"
            )
        inputs = np.array(array, dtype=dtype)
        _check_finite(inputs, path)
        if progress is not None:
            progress(count, count)
        description = f"{path.name}: {count} preprocessed input{'s' if count != 1 else ''}{capped}"
    else:
        pre = Preprocessor(spec)
        inputs = _empty_inputs(spec, count)
        color = "GRAY" if array.ndim == 3 else "RGB"
        for i in range(count):
            inputs[i] = pre(np.asarray(array[i]), color=color)[0][0]
            if progress is not None:
                progress(i + 1, count)
        height, width = array.shape[1:3]
        description = f"{path.name}: {count} raw {width}x{height} frame{'s' if count != 1 else ''}{capped}"
    logger.info("calibration data: %s", description)
    frame = None if kind == "preprocessed" else (lambda i: _rgb(np.asarray(array[i])))
    return CalibrationSet(inputs, description, frame=frame)


def _rgb(frame: np.ndarray) -> np.ndarray:
    """A raw uint8 frame of a calibration array as (H, W, 3) RGB."""
    return np.ascontiguousarray(np.repeat(frame[:, :, None], 3, axis=2) if frame.ndim == 2 else frame)


def _check_finite(inputs: np.ndarray, path: Path) -> None:
    if not np.isfinite(np.add.reduce(inputs, axis=None, dtype=np.float64)):
        nan, inf = int(np.isnan(inputs).sum()), int(np.isinf(inputs).sum())
        if nan or inf:
            raise ConfigError(
                f"calibration array {path}: {nan} NaN and {inf} inf values (of {inputs.size}); inputs must be finite"
            )


def _listing(items: list[str], shown: int = 8, sep: str = ", ") -> str:
    more = f"{sep}… ({len(items) - shown} more)" if len(items) > shown else ""
    return sep.join(items[:shown]) + more


# --------------------------------------------------------------------------- ONNX Runtime


class ArrayDataReader(CalibrationDataReader):
    """Feeds ``{name: array[i:i+1]}`` for each sample ``i`` of ``inputs`` (ORT's ``CalibrationDataReader``).

    ``inputs`` maps each model input name to an ``(N, ...)`` array, all with the same N >= 1.
    :meth:`get_next` returns the next batch-1 feed, then ``None`` at the end; :meth:`rewind`
    starts again; :meth:`set_range` limits it to samples ``start..end-1`` (and rewinds).
    """

    def __init__(self, inputs: Mapping[str, np.ndarray]) -> None:
        if not isinstance(inputs, Mapping) or not inputs:
            raise ValueError("ArrayDataReader needs a non-empty mapping of input name -> (N, ...) array")
        arrays: dict[str, np.ndarray] = {}
        for name, value in inputs.items():
            array = np.asarray(value)
            if array.ndim < 1:
                raise ValueError(f"ArrayDataReader input {name!r} is a scalar; expected an (N, ...) array")
            arrays[str(name)] = np.ascontiguousarray(array)
        counts = {name: len(array) for name, array in arrays.items()}
        if len(set(counts.values())) != 1 or 0 in counts.values():
            raise ValueError(f"ArrayDataReader inputs must have the same number (>= 1) of samples, got {counts}")
        self._arrays = arrays
        self._count = next(iter(counts.values()))
        self._start, self._end = 0, self._count
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next sample as ``{name: (1, ...) array}``, or ``None`` when all have been given."""
        index = self._start + self._next
        if index >= self._end:
            return None
        self._next += 1
        return {name: array[index : index + 1] for name, array in self._arrays.items()}

    def rewind(self) -> None:
        """Start again from the first sample (of the range)."""
        self._next = 0

    def set_range(self, start_index: int, end_index: int) -> None:
        """Give only samples ``start_index .. end_index - 1`` from now on, from the first of them."""
        if not 0 <= start_index <= end_index <= self._count:
            raise ValueError(f"range {start_index}..{end_index} is outside 0..{self._count}")
        self._start, self._end = start_index, end_index
        self._next = 0

    def __len__(self) -> int:
        return self._end - self._start
