"""The ``ganforge`` command end to end, in subprocesses, against a temporary model store."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY = ["--width", "8", "--batch-size", "16", "--subset", "512", "--steps", "30",
        "--sample-every", "10", "--checkpoint-every", "10", "--eval-samples", "500",
        "--device", "cpu", "--no-progress"]


def model_tags(cli) -> set[str]:
    out = cli("models", "list", "--json")
    assert out.returncode == 0, out.stderr
    return {m["tag"] for m in json.loads(out.stdout)}


@pytest.fixture(scope="module")
def trained(cli, tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("runs") / "cli-run"
    out = cli("train", "--family", "dcgan", "--conditional", "--seed", "1", "--run-dir",
              str(run_dir), "--json", *TINY)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), run_dir


def test_train_registers_an_evaluated_model(trained, cli) -> None:
    result, run_dir = trained
    assert result["tag"].startswith("mnist-dcgan-cond:")
    assert result["steps"] == 30 and result["parity_error"] <= 1e-4
    metrics = result["metrics"]
    assert metrics["samples"] == 500 and len(metrics["per_class_accuracy"]) == 10
    assert result["stage"] == "candidate"  # 30 steps cannot pass the 0.95 gate
    for name in ("checkpoint.pt", "generator.onnx", "generator.pt", "history.jsonl", "losses.png",
                 "samples/step-000030.png"):
        assert (run_dir / name).exists(), name
    assert result["tag"] in model_tags(cli)


def test_unconditional_mlp_trains_and_samples(cli, tmp_path) -> None:
    out = cli("train", "--family", "mlp", "--no-conditional", "--run-dir", str(tmp_path / "run"),
              "--json", *TINY)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["tag"].startswith("mnist-mlp:") and result["metrics"]["label_accuracy"] is None
    png = tmp_path / "mlp.png"
    assert cli("sample", "--model", result["tag"], "-o", str(png)).returncode == 0
    assert Image.open(png).size == (28, 28)
    bad = cli("sample", "--model", result["tag"], "--digit", "3", "-o", str(png))
    assert bad.returncode == 2 and "digit" in bad.stderr and "unconditional" in bad.stderr


def test_models_list_table(trained, cli) -> None:
    out = cli("models", "list")
    assert out.returncode == 0 and trained[0]["tag"] in out.stdout and "STAGE" in out.stdout


def test_evaluate_a_tag(trained, cli) -> None:
    out = cli("evaluate", trained[0]["tag"], "--samples", "300", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["samples"] == 300 and 0 <= report["label_accuracy"] <= 1


def test_sample_png_grid_npy_and_seeds(trained, cli, tmp_path) -> None:
    tag = trained[0]["tag"]
    one, again, other = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    for path, seed in ((one, "42"), (again, "42"), (other, "43")):
        out = cli("sample", "--model", tag, "--digit", "7", "--seed", seed, "-o", str(path))
        assert out.returncode == 0, out.stderr
    assert Image.open(one).size == (28, 28) and Image.open(one).mode == "L"
    assert one.read_bytes() == again.read_bytes()
    assert one.read_bytes() != other.read_bytes()
    grid = tmp_path / "grid.png"
    assert cli("sample", "--model", tag, "--digit", "3", "--n", "16", "-o", str(grid)).returncode == 0
    assert Image.open(grid).size == (4 * 30 + 2, 4 * 30 + 2)
    arr = tmp_path / "x.npy"
    assert cli("sample", "--model", tag, "--digit", "3", "--n", "5", "-o", str(arr)).returncode == 0
    images = np.load(arr)
    assert images.shape == (5, 1, 28, 28) and images.min() >= -1 and images.max() <= 1


def test_resume_continues_a_run(trained, cli) -> None:
    _, run_dir = trained
    out = cli("train", "--resume", str(run_dir), "--steps", "40", "--eval-samples", "300",
              "--no-progress", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["steps"] == 40
    bad = cli("train", "--resume", str(run_dir), "--latent-dim", "5")
    assert bad.returncode == 2 and "resume" in bad.stderr and "latent-dim" in bad.stderr
    other = cli("train", "--run-dir", str(run_dir), *TINY, "--latent-dim", "5")
    assert other.returncode == 2 and "run_dir" in other.stderr and "another config" in other.stderr


@pytest.mark.parametrize(("args", "field"), [
    (["train", "--family", "stylegan"], "family"),
    (["train", "--latent-dim", "0"], "latent_dim"),
    (["train", "--steps", "0"], "steps"),
    (["train", "--data-dir", "/nonexistent/mnist"], "data_dir"),
    (["train", "--device", "cuda"], "device"),
    (["train", "--resume", "/nonexistent/run"], "resume"),
    (["sample", "--model", "mnist-dcgan-cond", "--digit", "10", "-o", "/tmp/x.png"], "digit"),
    (["sample", "--model", "mnist-dcgan-cond", "--digit", "-1", "-o", "/tmp/x.png"], "digit"),
    (["sample", "--model", "mnist-dcgan-cond", "--digit", "3", "--n", "0", "-o", "/tmp/x.png"], "n"),
    (["sample", "--model", "mnist-nothing", "--digit", "3", "-o", "/tmp/x.png"], "model"),
    (["evaluate", "mnist-nothing"], "model"),
])
def test_bad_input_names_the_field_and_changes_nothing(trained, cli, args, field) -> None:
    before = store_files()
    assert any(name.endswith("generator.onnx") for name in before)  # the trained fixture's model
    tiny = TINY if args[0] == "train" and "--resume" not in args else []
    out = cli(args[0], *tiny, *args[1:])  # the bad flag comes last, so it wins
    assert out.returncode == 2, out.stdout + out.stderr
    assert field in out.stderr
    assert "Traceback" not in out.stderr
    assert store_files() == before


@pytest.mark.parametrize("args", [
    ["train", "--family", "stylegan"], ["train", "--steps", "0"], ["train", "--judge-epochs", "0"],
    ["train", "--eval-samples", "5"], ["classifier", "--dataset", "cifar10"],
    ["classifier", "--epochs", "0"], ["worker", "--jobs", "0"], ["worker", "--queues", "fpga"]])
def test_a_bad_flag_is_refused_before_torch_is_imported(args) -> None:
    """The spec and the flags are checked first (ganforge.spec is torch-free): a typo answers
    in well under a second, not after the seconds torch takes to import."""
    code = ("import sys\nfrom ganforge import cli\n"
            f"code = cli.main({args!r})\n"
            "print(code, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False"], out.stdout + out.stderr
    assert args[1].lstrip("-").replace("-", "_") in out.stderr


def test_missing_data_with_downloads_off(cli, tmp_path) -> None:
    out = cli("train", *TINY, env={"GANFORGE_DATA_DIR": str(tmp_path)})
    assert out.returncode == 2 and "data_dir" in out.stderr and "GANFORGE_DOWNLOAD" in out.stderr


@pytest.fixture(scope="module")
def bad_sets(tmp_path_factory) -> dict[str, str]:
    """Image folders a job must refuse before it writes anything."""
    root = tmp_path_factory.mktemp("sets")
    (root / "empty" / "cats").mkdir(parents=True)  # a class folder with no images
    (root / "empty" / "dogs").mkdir()
    Image.new("RGB", (8, 8)).save(root / "empty" / "dogs" / "a.png")
    for i, mode in enumerate(["RGB", "RGB", "L"]):  # two colour images and a grey one
        (root / "mixed" / f"c{i}").mkdir(parents=True)
        Image.new(mode, (8, 8)).save(root / "mixed" / f"c{i}" / "x.png")
    (root / "one" / "only").mkdir(parents=True)
    for i in range(12):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(root / "one" / "only" / f"{i}.png")
    return {name: f"imagefolder:{root / name}" for name in ("empty", "mixed", "one")} | {
        "missing": f"imagefolder:{root / 'nowhere'}"}


@pytest.mark.parametrize(("args", "field", "words"), [
    (["--dataset", "cifar10"], "dataset", "one of mnist, fashion-mnist, emnist-letters, imagefolder:PATH"),
    (["--dataset", "{empty}"], "dataset", "class folder 'cats'"),
    (["--dataset", "{mixed}", "--channels", "3"], "dataset", "images of mixed modes"),
    (["--dataset", "{missing}"], "dataset", "is not a directory"),
    (["--dataset", "{one}", "--channels", "3"], "conditional", "--no-conditional"),
    (["--family", "mlp", "--image-size", "64"], "image_size", "28, 32 (the mlp family"),
    (["--image-size", "48"], "image_size", "28, 32, 64"),
    (["--channels", "2"], "channels", "1 (grey) or 3 (colour)"),
    (["--g-steps", "2"], "g_steps", "threshold schedule"),
    (["--judge-epochs", "0"], "judge_epochs", "between 1 and 100"),
])
def test_bad_dataset_input_is_one_line_and_writes_nothing(cli, bad_sets, tmp_path, args, field,
                                                           words) -> None:
    before = store_files()
    args = [a.format(**bad_sets) for a in args]
    out = cli("train", *TINY, "--run-dir", str(tmp_path / "run"), *args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith(f"ganforge: error: {field}: ") and out.stderr.count("\n") == 1, out.stderr
    assert words in out.stderr
    assert not (tmp_path / "run").exists()
    assert store_files() == before


def store_files() -> dict[str, tuple[int, int]]:
    """Every file in the (session's) model store, generators and judges, with its size and
    modification time: a refused command must leave each one as it was."""
    home = Path(os.environ["BENTOML_HOME"])
    return {str(p.relative_to(home)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in home.rglob("*") if p.is_file()}


def test_one_class_folder_passes_the_check_unconditionally(bad_sets) -> None:
    """The folder the conditional job refused is a valid unconditional set (checked only up to
    the data, no training: ``pipeline.check_dataset``)."""
    from ganforge.settings import get_settings
    from ganforge.spec import TrainConfig
    from trainer.pipeline import check_dataset

    info = check_dataset(TrainConfig(dataset=bad_sets["one"], conditional=False, channels=3), get_settings())
    assert info.class_names == ("only",) and not info.conditional


def test_classifier_bad_input(cli) -> None:
    for args, field in ((["--dataset", "cifar10"], "dataset"), (["--channels", "2"], "channels"),
                        (["--image-size", "30"], "image_size"), (["--epochs", "0"], "epochs")):
        out = cli("classifier", *args)
        assert out.returncode == 2 and out.stderr.startswith(f"ganforge: error: {field}: "), out.stderr


def test_sample_label_and_digit_are_one_thing(trained, cli, tmp_path) -> None:
    tag = trained[0]["tag"]
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert cli("sample", "--model", tag, "--label", "7", "--seed", "5", "-o", str(a)).returncode == 0
    assert cli("sample", "--model", tag, "--digit", "7", "--seed", "5", "-o", str(b)).returncode == 0
    assert a.read_bytes() == b.read_bytes()
    bad = cli("sample", "--model", tag, "--label", "seven", "-o", str(a))
    assert bad.returncode == 2 and "label: unknown label 'seven'; allowed: a class name (0, 1" in bad.stderr


def test_models_list_shows_dataset_and_shape(trained, cli) -> None:
    out = cli("models", "list")
    row = next(line for line in out.stdout.splitlines() if line.startswith(trained[0]["tag"]))
    assert "mnist" in row.split() and "1x28x28" in row.split()
