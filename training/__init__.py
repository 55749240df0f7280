"""Training of the conventional and rotation-equivariant MobileNetV2 on PCam, and ONNX export.

Heavy dependencies (torch, e2cnn, onnx) are imported by the submodules that need them; ``engine``
and ``gui`` never import this package.
"""

import engine  # noqa: F401 - first, so that onnxruntime never reports anything (engine/__init__.py)
