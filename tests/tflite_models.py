"""Build the tiny .tflite models of ``tests/test_tflite_backend.py`` (run with a TensorFlow python).

This script runs in a converter environment (TensorFlow never enters the main venv),
as ``python tests/tflite_models.py OUT_DIR``, and writes into ``OUT_DIR``:

- ``trunk_fp32.tflite``: ``image`` (N, 12, 16, 3) NHWC, dynamic batch -> ``features`` (N, 12, 16, 4)
  (conv + ReLU) and ``pooled`` (N, 4); a SavedModel signature ``serving_default``, so the
  interpreter's tensor names (``serving_default_image:0``, ``StatefulPartitionedCall:0``…) differ
  from the signature keys, as they do in real conversions.
- ``trunk_int8.tflite``: the same, fully INT8 with int8 input and outputs.
- ``head_fp32.tflite`` / ``head_int8.tflite``: ``features`` -> ``logits`` (N, 5); the INT8 head is
  calibrated on the float trunk's features, so its input has the trunk output's quantisation.
- ``head_int8_rescaled.tflite``: the INT8 head calibrated on features x 3 (another input scale).
- ``custom_op.tflite``: a custom op (``BesselI1e``) that no TFLite runtime has.
- ``flex_op.tflite``: a select-TF op (``FlexMatrixDeterminant``): needs the Flex delegate.
- ``reference.npz``: test images and what TensorFlow computes for them: the float graphs'
  outputs, and the INT8 models run by ``tf.lite.Interpreter`` (dequantised outputs and the raw
  int8 trunk features).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

HEIGHT, WIDTH, CHANNELS, FEATURES, CLASSES = 12, 16, 3, 4, 5


class Trunk(tf.Module):
    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.kernel = tf.Variable(rng.normal(0, 0.5, (3, 3, CHANNELS, FEATURES)).astype(np.float32))
        self.bias = tf.Variable(rng.normal(0, 0.1, (FEATURES,)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, HEIGHT, WIDTH, CHANNELS], tf.float32, name="image")])
    def __call__(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        features = tf.nn.relu(tf.nn.conv2d(image, self.kernel, 1, "SAME") + self.bias)
        return {"features": features, "pooled": tf.reduce_mean(features, axis=[1, 2])}


class Head(tf.Module):
    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.kernel = tf.Variable(rng.normal(0, 0.5, (1, 1, FEATURES, 8)).astype(np.float32))
        self.dense = tf.Variable(rng.normal(0, 0.5, (8, CLASSES)).astype(np.float32))
        self.bias = tf.Variable(rng.normal(0, 0.1, (CLASSES,)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, HEIGHT, WIDTH, FEATURES], tf.float32, name="features")])
    def __call__(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        hidden = tf.nn.relu(tf.nn.conv2d(features, self.kernel, 1, "SAME"))
        return {"logits": tf.matmul(tf.reduce_mean(hidden, axis=[1, 2]), self.dense) + self.bias}


def convert(module: tf.Module, work: Path, name: str, calibration: list[np.ndarray] | None = None) -> bytes:
    """SavedModel (signature ``serving_default``) -> .tflite; full INT8 when ``calibration`` is given."""
    saved = work / name
    tf.saved_model.save(module, str(saved), signatures={"serving_default": module.__call__.get_concrete_function()})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if calibration is not None:
        samples = calibration

        def representative() -> object:
            for sample in samples:
                yield [sample]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def convert_function(fn: tf.types.experimental.GenericFunction, *, flex: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    if flex:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    else:
        converter.allow_custom_ops = True
    return converter.convert()


@tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
def custom_op(x: tf.Tensor) -> dict[str, tf.Tensor]:
    return {"y": tf.math.special.bessel_i1e(x)}


@tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
def flex_op(x: tf.Tensor) -> dict[str, tf.Tensor]:
    return {"y": tf.reshape(tf.linalg.det(tf.reshape(x, [1, 2, 2])), [1, 1])}


def run_int8(model: bytes, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an INT8 model's signature with TF's interpreter: (raw int8 outputs, dequantised outputs)."""
    interpreter = tf.lite.Interpreter(model_content=model)
    runner = interpreter.get_signature_runner("serving_default")
    feeds = {}
    for key, detail in runner.get_input_details().items():
        scale, zero = detail["quantization"]
        feeds[key] = np.clip(np.round(inputs[key] / scale) + zero, -128, 127).astype(np.int8)
    raw = runner(**feeds)
    out: dict[str, np.ndarray] = {}
    for key, detail in runner.get_output_details().items():
        scale, zero = detail["quantization"]
        out[f"{key}_raw"] = raw[key]
        out[key] = (raw[key].astype(np.float32) - zero) * scale
    return out


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(6)
    trunk, head = Trunk(rng), Head(rng)
    calibration = [rng.uniform(-1, 1, (1, HEIGHT, WIDTH, CHANNELS)).astype(np.float32) for _ in range(32)]
    features_calibration = [trunk(image)["features"].numpy() for image in calibration]
    images = rng.uniform(-1, 1, (2, HEIGHT, WIDTH, CHANNELS)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = {
            "trunk_fp32": convert(trunk, work, "trunk_fp32"),
            "trunk_int8": convert(trunk, work, "trunk_int8", calibration),
            "head_fp32": convert(head, work, "head_fp32"),
            "head_int8": convert(head, work, "head_int8", features_calibration),
            "head_int8_rescaled": convert(head, work, "head_int8_rescaled", [f * 3 for f in features_calibration]),
        }
    models["custom_op"] = convert_function(custom_op, flex=False)
    models["flex_op"] = convert_function(flex_op, flex=True)
    for name, content in models.items():
        (out_dir / f"{name}.tflite").write_bytes(content)

    float_out = trunk(images)
    features = float_out["features"].numpy()
    reference = {
        "image": images,
        "features": features,
        "pooled": float_out["pooled"].numpy(),
        "logits": head(features)["logits"].numpy(),
    }
    trunk_int8 = run_int8(models["trunk_int8"], {"image": images})
    reference.update({f"int8_{k}": v for k, v in trunk_int8.items()})
    reference["int8_logits"] = run_int8(models["head_int8"], {"features": trunk_int8["features"]})["logits"]
    np.savez(out_dir / "reference.npz", **reference)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
