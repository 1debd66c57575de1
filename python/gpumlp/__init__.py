"""gpumlp: multi-layer perceptrons trained on any GPU wgpu reaches (Vulkan, Metal, DX12, GL),
or on the CPU, behind scikit-learn's estimator interface.

>>> from gpumlp import MLPClassifier
>>> clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=50).fit(X_train, y_train)
>>> clf.predict(X_test)

Models save as the ``gpumlp`` command's safetensors checkpoints (``clf.save(path)``,
``gpumlp.load(path)``; PyTorch reads ``layers.{i}.weight`` [out, in] and ``layers.{i}.bias``) and
export to ONNX (``clf.to_onnx(path)``).
"""

from ._gpumlp import __version__
from ._mlp import HAVE_SKLEARN, MLPClassifier, MLPRegressor, load

__all__ = ["MLPClassifier", "MLPRegressor", "load", "HAVE_SKLEARN", "__version__"]
