"""ganforge: train, evaluate, export and serve GANs.

The packages beside this one hold the product: ``models`` (GAN families and losses),
``trainer`` (training loop, evaluation, ONNX export, model store) and ``services``
(sampling and the HTTP service). This package holds what they share: settings, errors,
image helpers and the ``ganforge`` command line.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ganforge")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"
