import pytest

from tests.utils.server import start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A fresh store: the service imports the shipped default model on its first start."""
    root = tmp_path_factory.mktemp("service")
    srv = start_server(root / "bentoml", root / "serve.log")
    yield srv
    stop_server(srv)
