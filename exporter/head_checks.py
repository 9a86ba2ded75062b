"""Every check a device would make on a bundle's heads, made by the exporter before it writes.

A split builds its manifest, then :func:`check_heads` checks it the way the device will read
it: the manifest as a whole (every field, as ``edge-runtime`` parses it), the schedules (a
conditional head must watch a head that exists, without cycles), and each head's decoder —
its parameters, and a decode of the head's real outputs (the verified split's outputs for
one sample input), so a decoder that does not fit its output shapes, a label count that is
not the class count, a prior count that is not the output's, all fail *before* the bundle
directory appears. Class labels taken from the model's metadata that do not fit a head are
dropped with a warning (a head spec's labels are never dropped: they fail). Detection scores
outside 0..1 on the sample are reported (logits decoded without an activation).

Example::

    manifest = check_heads(manifest, outputs={"boxes": boxes, "scores": scores}, from_metadata={"det"})
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import replace

import numpy as np

from edge_runtime.bundle.manifest import Manifest
from edge_runtime.bundle.specs import DecoderSpec
from edge_runtime.errors import ModelError
from edge_runtime.frames.geometry import FrameGeometry
from edge_runtime.inference.decoders import build_decoder
from edge_runtime.inference.results import Detections
from edge_runtime.inference.schedule import HeadScheduler

logger = logging.getLogger(__name__)


def check_heads(
    manifest: Manifest,
    outputs: Mapping[str, np.ndarray],
    *,
    from_metadata: Collection[str] = (),
) -> Manifest:
    """Check ``manifest``'s heads against ``outputs`` (output name -> one sample's tensor, batch
    first); return the manifest, with the metadata labels of the heads in ``from_metadata``
    dropped where they do not fit. Raises :class:`~edge_runtime.errors.EdgeRuntimeError`
    subclasses naming the head, the parameter or the output."""
    Manifest.from_mapping(manifest.to_dict(), "the manifest to write")
    HeadScheduler({name: entry.schedule for name, entry in manifest.heads.items()})
    height, width = manifest.input.height_width
    geometry = FrameGeometry.stretch(width, height, width, height)
    heads = dict(manifest.heads)
    for name, entry in manifest.heads.items():
        spec = entry.decoder or DecoderSpec()
        tensors = {output: outputs[output] for output in entry.outputs if output in outputs}
        try:
            result = build_decoder(name, spec, entry.outputs)(tensors, geometry)
        except ModelError as exc:
            if name not in from_metadata or "labels" not in spec.params:
                raise
            params = {k: v for k, v in spec.params.items() if k != "labels"}
            logger.warning(
                "head %r: the model metadata's %d class labels do not fit this head (%s); the classes are "
                "named class_0... instead: give 'labels' in the head spec",
                name, len(spec.params["labels"]), exc,
            )  # fmt: skip
            spec = DecoderSpec(spec.type, params)
            result = build_decoder(name, spec, entry.outputs)(tensors, geometry)
            heads[name] = replace(entry, decoder=spec)
        if (
            isinstance(result, Detections)
            and len(result)
            and (result.scores.max() > 1.0 + 1e-4 or result.scores.min() < 0)
        ):
            logger.warning(
                "head %r: decoded scores lie outside 0..1 (%.3g..%.3g): the score outputs look like logits; "
                "set the decoder's activation to 'sigmoid' (grid: activation, ssd: score_activation)",
                name, float(result.scores.min()), float(result.scores.max()),
            )  # fmt: skip
    return replace(manifest, heads=heads)
