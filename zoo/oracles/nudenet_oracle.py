"""Oracle for the zoo: nudenet's own ``NudeDetector().detect(path)`` on every image of a folder, as JSON.

Runs in the nudenet oracle virtualenv (:mod:`zoo.nudenet`), never in the project's: the bundled
``320n.onnx`` at 320 x 320 on onnxruntime CPU, the package's pre- and post-processing
(``cv2.imread``, pad right/bottom to a square, NMS with score 0.25 and IoU 0.45, class-agnostic).

The package returns ``box = [int(x), int(y), int(w), int(h)]`` (top-left and size, truncated);
it is stored as ``box_xywh`` and as ``box = [x, y, x + w, y + h]``.

Usage: ``python nudenet_oracle.py IMAGE_DIR OUT_JSON``
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cv2
from nudenet import NudeDetector

PACKAGES = ("nudenet", "onnxruntime", "opencv-python-headless", "numpy")
SUFFIXES = (".png", ".jpg", ".jpeg")


def main(argv: list[str]) -> int:
    """Run the package on ``IMAGE_DIR``'s images and write ``OUT_JSON``."""
    source, out = Path(argv[0]), Path(argv[1])
    detector = NudeDetector()
    images: dict[str, Any] = {}
    for path in sorted(p for p in source.iterdir() if p.suffix.lower() in SUFFIXES):
        image = cv2.imread(str(path))
        if image is None:
            raise SystemExit(f"{path}: OpenCV cannot read it")
        height, width = image.shape[:2]
        found = detector.detect(str(path))
        images[path.name] = {
            "width": int(width),
            "height": int(height),
            "detections": [
                {
                    "box": [d["box"][0], d["box"][1], d["box"][0] + d["box"][2], d["box"][1] + d["box"][3]],
                    "box_xywh": list(d["box"]),
                    "score": float(d["score"]),
                    "label": str(d["class"]),
                }
                for d in found
            ],
        }
        print(f"{path.name}: {len(found)} detections", flush=True)
    document = {
        "model": "nudenet 320n.onnx (YOLOv8n, Ultralytics 8.2.46 export)",
        "versions": {name: version(name) for name in PACKAGES},
        "box_format": "box: x, y, x + w, y + h from the package's int [x, y, w, h] in original-image pixels",
        "params": {"prefilter": ">= 0.2", "score_threshold": 0.25, "nms_threshold": 0.45, "nms": "class-agnostic"},
        "images": images,
    }
    out.write_text(json.dumps(document, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
