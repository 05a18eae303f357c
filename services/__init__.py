"""The HTTP service (BentoML): ``service`` (the BentoML class and the sampling routes), ``app``
(the mounted FastAPI app), ``jobs_api`` (the job routes), ``schemas``, ``generate`` (what the
sampling routes do), ``batching``, ``registry`` (loaded models, hot reload), ``metrics``.

Imports the core (``ganforge``) only: never ``trainer``, ``models`` or torch (the service image
has none; ``make lint`` checks it with import-linter).
"""
