"""Training: ``data``, ``loop`` (the training loop) and ``callbacks`` (what hangs off it),
``checkpoint``, ``classifier`` and ``evaluate`` (the judge and its metrics), ``export`` (ONNX),
``pipeline`` (train, export, evaluate, register: one job end to end) and ``worker`` (the Celery
task that runs the pipeline for a queued job).

Imports ``models`` and the core (``ganforge``); never ``services``.
"""
