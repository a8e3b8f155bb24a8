"""Interop: our weights format, safe loading, third-party imports, ONNX/TorchScript export.

The public entry points are re-exported here; ONNX and onnxruntime are imported only
when an ONNX file is exported or run.
"""

from resnetlab.interop.loading import LoadedModel, OnnxModel, load_model_file
from resnetlab.interop.safe_load import safe_torch_load
from resnetlab.interop.weights import load_weights, save_weights

__all__ = [
    "LoadedModel",
    "OnnxModel",
    "load_model_file",
    "load_weights",
    "safe_torch_load",
    "save_weights",
]
