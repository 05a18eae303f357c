"""Training, evaluation, ONNX export and the model store.

``loop`` (the training loop) and ``callbacks`` (what hangs off it), ``config`` (the job spec),
``data`` (MNIST), ``classifier`` and ``evaluate`` (the judge and its metrics), ``export`` (ONNX),
``store`` (BentoML's model store) and ``pipeline`` (all of it for one job).
"""
