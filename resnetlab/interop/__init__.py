"""Interop: our weights format, safe loading, third-party imports, ONNX/TorchScript export."""
