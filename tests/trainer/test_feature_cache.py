import os
import time

import numpy as np
import pytest
from pydantic import ValidationError

from ganforge.settings import Settings
from trainer.feature_cache import PREFIX, STALE_TMP_SECONDS, FeatureCache


def kept(folder) -> set[str]:
    return {p.name.removeprefix(PREFIX).removesuffix(".npy") for p in folder.glob(f"{PREFIX}*.npy")}


def test_a_stored_array_reads_back_and_a_wrong_shape_does_not(tmp_path) -> None:
    cache = FeatureCache(tmp_path)
    feats = np.random.default_rng(0).standard_normal((7, 3))
    assert cache.load("a", (7, 3)) is None  # absent
    cache.store("a", feats)
    np.testing.assert_array_equal(cache.load("a", (7, 3)), feats)
    assert cache.load("a", (7, 4)) is None
    assert cache.load("a", (7, 3)) is not None  # a wrong shape asked for is no damage
    cache.store("b", feats.astype(np.float32))
    assert cache.load("b", (7, 3)) is None  # features are float64


def test_the_least_recently_used_go_past_max_bytes(tmp_path) -> None:
    one = np.zeros((16, 8))  # 1024 bytes and a 128-byte header
    size = 1024 + 128
    cache = FeatureCache(tmp_path, max_bytes=3 * size)
    (tmp_path / "other.npy").write_bytes(b"not ours")  # what is not the cache's stays
    for i, name in enumerate("abc"):
        cache.store(name, one)
        os.utime(cache.path(name), (1000 + i, 1000 + i))  # a, then b, then c
    assert kept(tmp_path) == {"a", "b", "c"}
    assert cache.load("a", one.shape) is not None  # a read marks a used: b is now the oldest
    cache.store("d", one)
    assert kept(tmp_path) == {"a", "c", "d"}
    assert sum(p.stat().st_size for p in tmp_path.glob(f"{PREFIX}*")) <= cache.max_bytes
    # a lower bound on the next writer: only what it wrote stays, however new the others
    FeatureCache(tmp_path, max_bytes=size).store("e", one)
    assert kept(tmp_path) == {"e"}
    assert (tmp_path / "other.npy").read_bytes() == b"not ours"
    # an array larger than the whole cache is not written, and removes nothing
    FeatureCache(tmp_path, max_bytes=size).store("huge", np.zeros((64, 8)))
    assert kept(tmp_path) == {"e"}


def test_a_killed_writers_temporary_files_go_after_an_hour(tmp_path) -> None:
    cache = FeatureCache(tmp_path)
    old = tmp_path / f".{PREFIX}x.npy.123.abc.tmp"
    fresh = tmp_path / f".{PREFIX}y.npy.456.def.tmp"  # a writer at work in another process
    for p in (old, fresh):
        p.write_bytes(b"half")
    then = time.time() - STALE_TMP_SECONDS - 60
    os.utime(old, (then, then))
    assert cache.prune() == [old]
    assert fresh.exists() and not old.exists()


def test_pruning_a_missing_or_unreadable_folder_is_no_error(tmp_path) -> None:
    assert FeatureCache(tmp_path / "absent").prune() == []
    blocked = tmp_path / "blocked"
    blocked.write_text("")  # a file where the folder should be
    FeatureCache(blocked).store("a", np.zeros((2, 2)))  # logged, not raised
    assert blocked.read_text() == ""


def test_the_settings_bound_the_cache_or_turn_it_off(tmp_path) -> None:
    cache = FeatureCache.of(Settings(var_dir=tmp_path, feature_cache_bytes=1 << 20))
    assert cache == FeatureCache(tmp_path / "cache", 1 << 20)
    assert FeatureCache.of(Settings(var_dir=tmp_path, feature_cache_bytes=0)) is None
    with pytest.raises(ValidationError, match="feature_cache_bytes"):
        Settings(feature_cache_bytes=-1)
    with pytest.raises(ValueError, match="max_bytes must be >= 0"):
        FeatureCache(tmp_path, -1)
