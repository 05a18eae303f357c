import pytest

from ganforge.files import atomic_write, write_bytes_atomic


def test_atomic_write_replaces_whole(tmp_path) -> None:
    path = tmp_path / "sub" / "a.json"
    write_bytes_atomic(path, b"one")
    write_bytes_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b"good")
    with pytest.raises(RuntimeError), atomic_write(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_readers_globs_never_see_the_temporary_file(tmp_path) -> None:
    with atomic_write(tmp_path / "step-000100.png") as tmp:
        tmp.write_bytes(b"partial")
        assert list(tmp_path.glob("step-*.png")) == [] and list(tmp_path.glob("*.png")) == []
    assert [p.name for p in tmp_path.glob("step-*.png")] == ["step-000100.png"]


def test_threads_writing_one_file_at_once_all_succeed(tmp_path) -> None:
    """A worker's job threads replace the same file (a model's ``latest`` pointer) at once: each
    write lands whole, none fails on another's temporary file, and nothing is left beside it."""
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "latest"
    values = [f"version-{i:03d}".encode() for i in range(8)]

    def write_many(value: bytes) -> None:
        for _ in range(40):
            write_bytes_atomic(path, value)

    with ThreadPoolExecutor(len(values)) as pool:
        list(pool.map(write_many, values))  # re-raises the first writer's error
    assert path.read_bytes() in values
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]
