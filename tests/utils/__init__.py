"""Helpers the tests share: ports, the CLI in a subprocess, real servers and workers."""

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600):
    """Run the real ``ganforge`` console entry in a subprocess."""
    return subprocess.run([sys.executable, "-m", "ganforge.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=ROOT)
