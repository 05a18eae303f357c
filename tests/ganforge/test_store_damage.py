"""A damaged model store, read and written in process (the session's throwaway store; every test
uses a model name of its own): unreadable versions are skipped one by one with a reason and read
again once their files change, and a registration killed midway leaves nothing readers see."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import bentoml
import pytest
import yaml

from ganforge import store
from ganforge.errors import ModelNotFound
from tests.utils import ROOT
from tests.utils.models import DEFAULT, own_name, register_default

ASSETS = DEFAULT
register = register_default


@pytest.fixture
def name():
    with own_name("mnist-damage") as name:
        yield name


def copy_version(good: store.StoredModel, version: str) -> Path:
    """The good version's folder again under another version (its model.yaml says so)."""
    target = good.path.parent / version
    shutil.copytree(good.path, target)
    info = yaml.safe_load((target / "model.yaml").read_text())
    info["version"] = version
    (target / "model.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
    return target


def test_unreadable_versions_are_skipped_one_by_one_with_a_reason(name) -> None:
    good = register(name)
    root = good.path.parent
    (root / "nomodelyaml").mkdir()
    (root / "nomodelyaml" / store.GENERATOR_FILE).write_bytes(b"half")
    (copy_version(good, "garbledyaml") / "model.yaml").write_text("{{{ not: [yaml")
    (copy_version(good, "listyaml") / "model.yaml").write_text("- a\n- list\n")
    badcard = copy_version(good, "badcard")
    info = yaml.safe_load((badcard / "model.yaml").read_text())
    info["metadata"] = {"family": "dcgan"}  # most of the card is missing
    (badcard / "model.yaml").write_text(yaml.safe_dump(info))
    (copy_version(good, "nogenerator") / store.GENERATOR_FILE).unlink()
    (root / "copiedyaml").mkdir()
    shutil.copy(good.path / "model.yaml", root / "copiedyaml")  # says it is another version

    scan = store.scan()
    assert [m.tag for m in scan.models if m.name == name] == [good.tag]
    assert {t: r for t, r in scan.skipped.items() if t.startswith(name + ":")} == {
        f"{name}:nomodelyaml": store.MISSING_MODEL_YAML,
        f"{name}:garbledyaml": store.BAD_MODEL_YAML, f"{name}:listyaml": store.BAD_MODEL_YAML,
        f"{name}:copiedyaml": store.BAD_MODEL_YAML, f"{name}:badcard": store.BAD_CARD,
        f"{name}:nogenerator": store.MISSING_GENERATOR}
    assert store.get_model(name).tag == good.tag  # the newest readable version
    with pytest.raises(ModelNotFound, match="no version"):
        store.get_model(f"{name}:nomodelyaml")

    # a fixed version is read again: its files changed (no permanent blacklist)
    fixed = copy_version(good, "fixedlater")
    shutil.rmtree(fixed)
    info = yaml.safe_load((good.path / "model.yaml").read_text())
    info["version"] = "garbledyaml"
    (root / "garbledyaml" / "model.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
    again = store.scan()
    assert f"{name}:garbledyaml" in {m.tag for m in again.models}
    assert f"{name}:garbledyaml" not in again.skipped


def test_unchanged_versions_are_not_parsed_again(name, monkeypatch) -> None:
    register(name)
    store.scan()
    reads: list[Path] = []
    read = store._read_version

    def counted(folder: Path, signature):
        reads.append(folder)
        return read(folder, signature)

    monkeypatch.setattr(store, "_read_version", counted)
    store.scan()
    assert reads == []
    newer = register(name)
    assert reads == [newer.path]  # only the new folder (registering lists the store too)


def test_versions_by_prefix_any_case_latest_and_ambiguity(name) -> None:
    good = register(name, store.CANDIDATE)
    copy_version(good, "abc1")
    copy_version(good, "abc2")
    assert store.get_model(f"{name}:{good.version[:5].upper()}").tag == good.tag
    assert store.get_model(f"{name.upper()}:{good.version.upper()}").tag == good.tag
    assert store.get_model(f"{name}:ABC1").version == "abc1"
    with pytest.raises(ModelNotFound, match="ambiguous"):
        store.get_model(f"{name}:abc")
    newest = store.get_model(f"{name}:latest")
    assert newest.tag == store.get_model(name).tag == store.list_models(name=name)[0].tag


KILL_MIDWAY = """
import os, shutil, signal, sys, uuid
from pathlib import Path
from ganforge import store
from tests.utils.models import own_name, DEFAULT as ASSETS, default_card as card

real = shutil.copyfile

def dying(src, dst, *args, **kwargs):
    # the version's generator, half written into its folder, then the writer is SIGKILLed
    if store.STAGING_DIR in str(dst) and Path(dst).name == store.GENERATOR_FILE:
        data = Path(src).read_bytes()
        Path(dst).write_bytes(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kwargs)

shutil.copyfile = dying
store.register(name=sys.argv[1], run_id=uuid.uuid4().hex, onnx_path=ASSETS / store.GENERATOR_FILE,
               card=card(), stage=store.PRODUCTION)
"""


def test_a_registration_killed_midway_leaves_nothing_readers_see(name) -> None:
    good = register(name)
    before = {p.name for p in good.path.parent.iterdir()}
    staging = store.store_root().parent / store.STAGING_DIR
    leftovers = set(staging.iterdir())
    out = subprocess.run([sys.executable, "-c", KILL_MIDWAY, name], cwd=ROOT, env=os.environ,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == -9, out.stderr  # killed, midway
    left = set(staging.iterdir()) - leftovers
    assert len(left) == 1  # the half-written version is there, out of the store
    half = next(left.pop().glob(f"{name}/*/{store.GENERATOR_FILE}"))
    assert 0 < half.stat().st_size < (ASSETS / store.GENERATOR_FILE).stat().st_size
    assert {p.name for p in good.path.parent.iterdir()} == before  # nothing new in the store
    assert [m.tag for m in store.list_models(name=name)] == [good.tag]
    assert [str(m.tag) for m in bentoml.models.list(name)] == [good.tag]  # BentoML reads it too
    assert str(bentoml.models.get(f"{name}:latest").tag) == good.tag
    # a later registration clears leftovers older than an hour, and publishes whole
    old = time.time() - store.STALE_STAGING_SECONDS - 60
    stale = half.parents[2]
    os.utime(stale, (old, old))
    newer = register(name)
    assert not stale.exists()
    assert store.get_model(name).tag == newer.tag == str(bentoml.models.get(f"{name}:latest").tag)
    assert newer.onnx_path.read_bytes() == (ASSETS / store.GENERATOR_FILE).read_bytes()
