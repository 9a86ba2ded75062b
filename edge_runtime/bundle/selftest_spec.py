"""The manifest's ``selftest`` section (:class:`SelfTestSpec`): the bundle's golden frames, the
float model's outputs for them and what the exporter measured on them.

Example::

    from edge_runtime.bundle.selftest_spec import SelfTestSpec
    spec = SelfTestSpec.from_mapping({"frames": ["selftest/frame_0.png"], "expected": "selftest/expected.npz"}, "m")
    spec.frame_files, spec.source   # ('selftest/frame_0.png',) 'synthetic'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.bundle.fields import check_bundle_path, check_choice, check_keys, field_error, get_field
from edge_runtime.errors import BundleError

#: Per-head self-test tolerance keys: fp32 ``|candidate - expected| <= rtol * range + atol``;
#: fp16/int8 raw heads: cosine similarity per output ``>= min_cosine``; decoded heads: the gate's
#: metric ``>= min_agreement``.
SELFTEST_TOLERANCE_KEYS = ("rtol", "atol", "min_cosine", "min_agreement")
#: Where the self-test frames come from.
SELFTEST_SOURCES = ("synthetic", "calibration")


@dataclass(frozen=True)
class SelfTestSpec:
    """The manifest's ``selftest`` section: golden frames and the float model's outputs for them.

    ``frames``: PNG files, one per frame (RGB, any size; the device reads them without OpenCV
    or Pillow), or (older bundles) one ``.npy`` of ``(N, H, W, 3) uint8`` frames; ``source``:
    ``calibration`` (frames held back from the calibration the fidelity gate measured) or
    ``synthetic``; ``expected``: ``.npz`` of the raw float32 outputs (keys ``<head>/<output>``,
    each ``(N, *shape)``); ``decoded``: the decoded results as JSON, for people; ``tolerance``:
    head -> overrides of the bounds (:data:`SELFTEST_TOLERANCE_KEYS`); ``agreement``: head ->
    artifact path (``"onnx/int8+onnx/int8"``: trunk then head, format/precision) -> the
    agreement the exporter measured on these frames with those artifacts, which the device must
    reproduce. Paths are relative to the bundle.
    """

    frames: str | tuple[str, ...]
    expected: str
    decoded: str | None = None
    tolerance: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    source: str = "synthetic"
    agreement: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    KEYS = ("frames", "expected", "decoded", "tolerance", "source", "agreement")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> SelfTestSpec:
        if not isinstance(data, Mapping):
            raise field_error(BundleError, where, f"'selftest' must be an object, got {data!r}")
        check_keys(data, cls.KEYS, where, strict=False)
        frames_value = data.get("frames")
        frames: str | tuple[str, ...]
        if isinstance(frames_value, list):
            if not frames_value or not all(isinstance(f, str) and f.lower().endswith(".png") for f in frames_value):
                raise field_error(BundleError, where, f"'frames' must list .png files, got {frames_value!r:.120}")
            frames = tuple(check_bundle_path(f, "frames path", where) for f in frames_value)
        else:
            frames = check_bundle_path(get_field(data, "frames", str, where, BundleError), "frames path", where)
        paths: dict[str, str | None] = {}
        for key in ("expected", "decoded"):
            path = get_field(data, key, str, where, BundleError, None if key == "decoded" else ...)
            paths[key] = None if path is None else check_bundle_path(path, f"{key} path", where)
        tolerance: dict[str, dict[str, float]] = {}
        for head, bounds in get_field(data, "tolerance", dict, where, BundleError, {}).items():
            here = f"{where}.tolerance.{head}"
            if not isinstance(bounds, Mapping):
                raise field_error(BundleError, here, f"must be an object with {', '.join(SELFTEST_TOLERANCE_KEYS)}")
            check_keys(bounds, SELFTEST_TOLERANCE_KEYS, here, strict=False)
            tolerance[str(head)] = {}
            for key in SELFTEST_TOLERANCE_KEYS:
                value = get_field(bounds, key, float, here, BundleError, None)
                if value is not None:
                    if not 0.0 <= value or (key in ("min_cosine", "min_agreement") and value > 1.0):
                        raise field_error(BundleError, here, f"{key!r} out of range: {value!r}")
                    tolerance[str(head)][key] = value
        agreement: dict[str, dict[str, float]] = {}
        for head, paths_values in get_field(data, "agreement", dict, where, BundleError, {}).items():
            here = f"{where}.agreement.{head}"
            if not isinstance(paths_values, Mapping):
                raise field_error(BundleError, here, "must map an artifact path to an agreement in 0..1")
            agreement[str(head)] = {}
            for path_key in paths_values:
                value = get_field(paths_values, path_key, float, here, BundleError)
                if not 0.0 <= value <= 1.0:
                    raise field_error(BundleError, here, f"{path_key!r}: agreement out of range: {value!r}")
                agreement[str(head)][str(path_key)] = value
        source = get_field(data, "source", str, where, BundleError, "synthetic")
        return cls(
            frames=frames,
            expected=str(paths["expected"]),
            decoded=paths["decoded"],
            tolerance=tolerance,
            source=check_choice(source, SELFTEST_SOURCES, "source", where, BundleError),
            agreement=agreement,
        )

    @property
    def frame_files(self) -> tuple[str, ...]:
        """Every frames file (the PNGs, or the one ``.npy``)."""
        return self.frames if isinstance(self.frames, tuple) else (self.frames,)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "frames": list(self.frames) if isinstance(self.frames, tuple) else self.frames,
            "expected": self.expected,
        }
        if self.decoded is not None:
            out["decoded"] = self.decoded
        out["tolerance"] = {head: dict(bounds) for head, bounds in self.tolerance.items()}
        out["source"] = self.source
        if self.agreement:
            out["agreement"] = {head: dict(values) for head, values in self.agreement.items()}
        return out
