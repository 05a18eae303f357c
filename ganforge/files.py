"""Writing files that other processes read while they are written: one rule, one owner.

Workers and service replicas share folders (the model store, the runs folder on an RWX volume).
A reader must never see half a file, so every shared file is written beside its final name and
renamed into place (``os.replace`` is atomic on one file system).
"""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | Path, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error the file is
    flushed to disk and renamed to ``path``, otherwise it is removed. The temporary name starts
    with a dot and ends in ``.tmp``, so globs such as ``step-*.png`` or ``*.json`` never match it
    (writers name their format explicitly). The name is unique per call, not per process: a
    worker's job threads write the same files (a model's ``latest`` pointer) at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
