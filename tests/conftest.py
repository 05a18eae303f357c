"""Session-wide test environment: local MNIST only (no downloads) and a throwaway model store.

The data root comes from GANFORGE_DATA_DIR (the Makefile points it at ../shared/data in CI);
BENTOML_HOME is set before bentoml is imported anywhere, so every test in this session uses one
temporary store.
"""

import os
import tempfile
from pathlib import Path

import pytest

from tests.utils import ROOT, run_cli

DATA_DIR = Path(os.environ.get("GANFORGE_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()
_STORE = tempfile.mkdtemp(prefix="ganforge-test-bentoml-")
os.environ["BENTOML_HOME"] = _STORE
os.environ["GANFORGE_DATA_DIR"] = str(DATA_DIR)
os.environ["GANFORGE_DOWNLOAD"] = "0"
os.environ["GANFORGE_RUNS_DIR"] = tempfile.mkdtemp(prefix="ganforge-test-runs-")
# the session's own var/ (the evaluator's feature cache, shared by the session's processes)
os.environ["GANFORGE_VAR_DIR"] = tempfile.mkdtemp(prefix="ganforge-test-var-")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
# The queue: a Redis database of the tests' own (CI starts Redis when it is down), with short
# redelivery and lock times so that the crash test runs in seconds.
REDIS_URL = os.environ.get("GANFORGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
os.environ["GANFORGE_BROKER_URL"] = REDIS_URL
os.environ["GANFORGE_RESULT_BACKEND"] = REDIS_URL
os.environ["GANFORGE_VISIBILITY_TIMEOUT"] = "8"
os.environ["GANFORGE_JOB_LOCK_TTL"] = "4"
os.environ["GANFORGE_WORKER_METRICS_PORT"] = "0"


@pytest.fixture(scope="session")
def redis_db():
    """The tests' Redis database, emptied once per session."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("Redis is not running at 127.0.0.1:6379; start it with: redis-server "
                    "--daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no")
    client.flushdb()
    return client


@pytest.fixture(scope="session")
def data_dir() -> Path:
    from trainer.data import has_mnist

    if not has_mnist(DATA_DIR):
        pytest.fail(f"MNIST not found under {DATA_DIR}: set GANFORGE_DATA_DIR (make test does)")
    return DATA_DIR


@pytest.fixture(scope="session")
def mnist_train(data_dir: Path):
    from trainer.data import load_mnist

    return load_mnist(data_dir, train=True)


@pytest.fixture(scope="session")
def mnist_test(data_dir: Path):
    from trainer.data import load_mnist

    return load_mnist(data_dir, train=False)


@pytest.fixture(scope="session")
def store_home() -> Path:
    return Path(_STORE)


@pytest.fixture(scope="session")
def cli():
    return run_cli
