"""ganforge: train, evaluate, export and serve GANs.

This package is the core both sides stand on, free of torch: ``settings``, ``errors``,
``files`` (atomic writes), ``images``, ``generator`` (the ONNX generator), ``card`` (the model
card), ``store`` (the model store), ``spec`` (the job spec), ``queue`` (the Celery app) and
``jobs`` (job records and the job client); plus ``cli``, the one face that reaches the trainer
too. It imports nothing of ``models``, ``trainer`` or ``services``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ganforge")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"
