"""Serving: ``sampling`` (ONNX Runtime generators, shared with the CLI and the evaluator)."""
