"""The service's Prometheus metrics (served by BentoML at /metrics with its own)."""

from prometheus_client import Counter, Gauge, Histogram

IMAGES = Counter("ganforge_images_generated_total", "Images generated",
                 ["model", "version"])
REQUESTS = Counter("ganforge_generate_requests_total",
                   "Sampling requests (/generate, /interpolate) by route and status code",
                   ["route", "code"])
LATENCY = Histogram("ganforge_generate_request_seconds",
                    "Sampling request latency (/generate, /interpolate)",
                    ["route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
BATCH_SIZE = Histogram("ganforge_batch_size", "Images per batch the batcher formed",
                       ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
MODEL_LOADS = Counter("ganforge_model_loads_total", "Model versions loaded", ["model"])
MODEL_LOAD_FAILURES = Counter("ganforge_model_load_failures_total",
                              "Model versions that failed to load (the old one kept serving)",
                              ["model"])
MODEL_INFO = Gauge("ganforge_model_info", "Loaded models (1 = serving)",
                   ["model", "version", "family", "conditional", "provider"],
                   multiprocess_mode="livesum")
