"""Other labelled sets end to end through the real ``ganforge`` command: Fashion-MNIST's real
files, EMNIST letters in its on-disk layout (the tutorial's threshold run too), a folder of
colour PNGs at 32x32. Each trains a few steps at tiny width, exports with parity, is judged by
its set's judge and registers with the dataset and class names in its card."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .sets import COLOURS, LETTERS, write_colour_folder, write_emnist_letters

FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
TINY = ["--width", "8", "--batch-size", "16", "--subset", "512", "--steps", "30",
        "--sample-every", "10", "--checkpoint-every", "10", "--eval-samples", "500",
        "--device", "cpu", "--no-progress"]


def train(cli, *args: str, env: dict | None = None) -> dict:
    out = cli("train", *TINY, "--json", *args, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def card_of(cli, tag: str) -> dict:
    out = cli("models", "list", "--json")
    assert out.returncode == 0, out.stderr
    (found,) = [m["metadata"] for m in json.loads(out.stdout) if m["tag"] == tag]
    return found


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed (make tools installs it)")
def test_fashion_mnist(cli, tmp_path: Path) -> None:
    result = train(cli, "--dataset", "fashion-mnist", "--judge-epochs", "1", "--judge-subset", "2000",
                   "--run-dir", str(tmp_path / "fashion"))
    assert result["tag"].startswith("fashion-mnist-dcgan-cond:") and result["parity_error"] <= 1e-4
    metrics = result["metrics"]
    assert metrics["judge"].startswith("judge-fashion-mnist-1x28:")  # trained first, in the store
    assert len(metrics["per_class_accuracy"]) == 10 and metrics["fcd_baseline"] > 0
    card = card_of(cli, result["tag"])
    assert card["dataset"] == "fashion-mnist" and tuple(card["class_names"]) == FASHION
    assert card["image_shape"] == [1, 28, 28] and card["config"]["dataset"] == "fashion-mnist"
    png = tmp_path / "sneaker.png"
    out = cli("sample", "--model", result["tag"], "--label", "Sneaker", "--seed", "1", "-o", str(png))
    assert out.returncode == 0, out.stderr
    assert Image.open(png).size == (28, 28) and Image.open(png).mode == "L"
    bad = cli("sample", "--model", result["tag"], "--label", "nosuch", "-o", str(png))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "label: unknown label 'nosuch'" in bad.stderr and "Sneaker" in bad.stderr


def test_emnist_letters_and_the_tutorial_run(cli, tmp_path: Path) -> None:
    data = write_emnist_letters(tmp_path / "data")
    judge = cli("classifier", "--dataset", "emnist-letters", "--data-dir", str(data), "--epochs", "2")
    assert judge.returncode == 0, judge.stderr[-3000:]
    info = json.loads(judge.stdout.strip().splitlines()[-1])
    assert info["tag"].startswith("judge-emnist-letters-1x28:") and info["classes"] == 26
    assert info["test_accuracy"] > 0.5

    result = train(cli, "--dataset", "emnist-letters", "--data-dir", str(data),
                   "--run-dir", str(tmp_path / "letters"))
    assert result["tag"].startswith("emnist-letters-dcgan-cond:") and result["parity_error"] <= 1e-4
    assert result["metrics"]["judge"] == info["tag"]  # the registered judge, not a new one
    card = card_of(cli, result["tag"])
    assert tuple(card["class_names"]) == LETTERS and card["num_classes"] == 26
    grid = Image.open(tmp_path / "letters" / "samples" / "step-000030.png")
    assert grid.size == (26 * 30 + 2, 4 * 30 + 2)  # a column per letter
    q = tmp_path / "q.png"
    out = cli("sample", "--model", result["tag"], "--label", "q", "--n", "4", "-o", str(q))
    assert out.returncode == 0, out.stderr
    assert Image.open(q).size == (2 * 30 + 2, 2 * 30 + 2)

    # the tutorial: unconditional DCGAN, threshold schedule, D's realness over each grid image
    tutorial = train(cli, "--dataset", "emnist-letters", "--data-dir", str(data), "--no-conditional",
                     "--schedule", "threshold", "--g-steps", "2", "--realness-grid", "--steps", "6",
                     "--sample-every", "3", "--run-dir", str(tmp_path / "tutorial"))
    assert tutorial["tag"].startswith("emnist-letters-dcgan:") and tutorial["steps"] == 6
    assert tutorial["metrics"]["label_accuracy"] is None
    assert len(tutorial["metrics"]["class_histogram"]) == 26  # judged by the letters' judge
    history = [json.loads(x) for x in (tmp_path / "tutorial" / "history.jsonl").read_text().splitlines()]
    assert len(history) == 6 and all(r["d_updates"] >= 1 and r["g_updates"] >= 2 for r in history)
    scored = Image.open(tmp_path / "tutorial" / "samples" / "step-000006.png")
    assert scored.size == (10 * 30 + 2, 10 * (28 + 11 + 2) + 2)  # a score strip above each image


def test_colour_image_folder_at_32(cli, tmp_path: Path) -> None:
    folder = write_colour_folder(tmp_path / "My Colours")
    result = train(cli, "--dataset", f"imagefolder:{folder}", "--channels", "3", "--image-size", "32",
                   "--judge-epochs", "2", "--run-dir", str(tmp_path / "colour"))
    assert result["tag"].startswith("folder-my-colours-dcgan-cond:") and result["parity_error"] <= 1e-4
    assert result["metrics"]["judge"].startswith("judge-folder-my-colours-")
    card = card_of(cli, result["tag"])
    assert card["image_shape"] == [3, 32, 32] and tuple(card["class_names"]) == tuple(sorted(COLOURS))
    grid = Image.open(tmp_path / "colour" / "samples" / "step-000030.png")
    assert grid.mode == "RGB" and grid.size == (10 * 34 + 2, 3 * 34 + 2)
    png, npy = tmp_path / "grass.png", tmp_path / "grass.npy"
    assert cli("sample", "--model", result["tag"], "--label", "grass", "-o", str(png)).returncode == 0
    image = Image.open(png)
    assert image.mode == "RGB" and image.size == (32, 32)
    out = cli("sample", "--model", result["tag"], "--label", "GRASS", "--n", "3", "-o", str(npy))
    assert out.returncode == 0, out.stderr
    assert np.load(npy).shape == (3, 3, 32, 32)
