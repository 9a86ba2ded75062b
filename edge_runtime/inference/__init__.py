"""Inference: the engine (trunk once, heads on schedule), backends, decoders and typed results.

Public names are imported from their module on first use (:mod:`edge_runtime.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from edge_runtime.inference.decoders import (
        build_decoder as build_decoder,
    )
    from edge_runtime.inference.decoders.base import (
        Decoder as Decoder,
    )
    from edge_runtime.inference.decoders.base import (
        Params as Params,
    )
    from edge_runtime.inference.decoders.classification import (
        ClassificationDecoder as ClassificationDecoder,
    )
    from edge_runtime.inference.decoders.common import (
        default_names as default_names,
    )
    from edge_runtime.inference.decoders.common import (
        sigmoid as sigmoid,
    )
    from edge_runtime.inference.decoders.common import (
        softmax as softmax,
    )
    from edge_runtime.inference.decoders.common import (
        to_xyxy as to_xyxy,
    )
    from edge_runtime.inference.decoders.detection import (
        DetectionDecoder as DetectionDecoder,
    )
    from edge_runtime.inference.decoders.embedding import (
        EmbeddingDecoder as EmbeddingDecoder,
    )
    from edge_runtime.inference.decoders.landmarks import (
        LandmarksDecoder as LandmarksDecoder,
    )
    from edge_runtime.inference.decoders.nms import (
        nms as nms,
    )
    from edge_runtime.inference.decoders.raw import (
        RawDecoder as RawDecoder,
    )
    from edge_runtime.inference.decoders.regression import (
        RegressionDecoder as RegressionDecoder,
    )
    from edge_runtime.inference.decoders.segmentation import (
        SegmentationDecoder as SegmentationDecoder,
    )
    from edge_runtime.inference.engine import (
        Engine as Engine,
    )
    from edge_runtime.inference.engine import (
        EngineOptions as EngineOptions,
    )
    from edge_runtime.inference.engine import (
        EngineStats as EngineStats,
    )
    from edge_runtime.inference.engine import (
        choose_artifact as choose_artifact,
    )
    from edge_runtime.inference.fidelity import (
        Fidelity as Fidelity,
    )
    from edge_runtime.inference.fidelity import (
        box_iou as box_iou,
    )
    from edge_runtime.inference.fidelity import (
        cosine_similarity as cosine_similarity,
    )
    from edge_runtime.inference.fidelity import (
        head_fidelity as head_fidelity,
    )
    from edge_runtime.inference.fidelity import (
        match_detections as match_detections,
    )
    from edge_runtime.inference.results import (
        Classification as Classification,
    )
    from edge_runtime.inference.results import (
        Detections as Detections,
    )
    from edge_runtime.inference.results import (
        Embedding as Embedding,
    )
    from edge_runtime.inference.results import (
        FrameResult as FrameResult,
    )
    from edge_runtime.inference.results import (
        Landmarks as Landmarks,
    )
    from edge_runtime.inference.results import (
        RawOutput as RawOutput,
    )
    from edge_runtime.inference.results import (
        Regression as Regression,
    )
    from edge_runtime.inference.results import (
        Segmentation as Segmentation,
    )
    from edge_runtime.inference.results import (
        decode_rle as decode_rle,
    )
    from edge_runtime.inference.results import (
        encode_rle as encode_rle,
    )
    from edge_runtime.inference.results import (
        result_to_dict as result_to_dict,
    )
    from edge_runtime.inference.results import (
        rle_runs as rle_runs,
    )
    from edge_runtime.inference.results import (
        rounded as rounded,
    )
    from edge_runtime.inference.schedule import (
        HeadScheduler as HeadScheduler,
    )
    from edge_runtime.inference.schedule import (
        condition_matches as condition_matches,
    )

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "decoders": ("build_decoder",),
        "decoders.base": ("Params", "Decoder"),
        "decoders.classification": ("ClassificationDecoder",),
        "decoders.common": ("default_names", "to_xyxy", "softmax", "sigmoid"),
        "decoders.detection": ("DetectionDecoder",),
        "decoders.nms": ("nms",),
        "decoders.embedding": ("EmbeddingDecoder",),
        "decoders.landmarks": ("LandmarksDecoder",),
        "decoders.raw": ("RawDecoder",),
        "decoders.regression": ("RegressionDecoder",),
        "decoders.segmentation": ("SegmentationDecoder",),
        "engine": ("EngineOptions", "choose_artifact", "EngineStats", "Engine"),
        "fidelity": ("Fidelity", "head_fidelity", "box_iou", "match_detections", "cosine_similarity"),
        "results": (
            "rounded",
            "Classification",
            "Detections",
            "encode_rle",
            "rle_runs",
            "decode_rle",
            "Segmentation",
            "Landmarks",
            "Regression",
            "Embedding",
            "RawOutput",
            "result_to_dict",
            "FrameResult",
        ),
        "schedule": ("condition_matches", "HeadScheduler"),
    },
)
