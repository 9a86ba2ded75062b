"""Model importers: each turns a framework model into one multi-output ONNX model."""
