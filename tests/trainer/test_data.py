"""The dataset registry: MNIST as before, Fashion-MNIST's real files, EMNIST's layout, image
folders, and every bad request named by its field."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import models
from ganforge import datasets
from ganforge.errors import DataNotFound, InvalidInput
from trainer.data import Split, dataset_info, has_dataset, load_dataset, load_mnist, normalize

FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
GREEN = (0, 255, 0)


# --- MNIST: unchanged ------------------------------------------------------------------------
def test_mnist_reads_what_torchvision_reads(data_dir: Path, mnist_train: Split, mnist_test: Split) -> None:
    from torchvision.datasets import MNIST

    for split, train, n in ((mnist_train, True, 60_000), (mnist_test, False, 10_000)):
        ref = MNIST(root=str(data_dir), train=train)
        assert split.images.shape == (n, 28, 28) and split.images.dtype == torch.uint8
        assert torch.equal(split.images, ref.data)
        assert torch.equal(split.labels, ref.targets) and split.labels.dtype == torch.int64
    assert mnist_train.class_names == tuple("0123456789")
    x = mnist_test.normalized(mnist_test.labels == 1)
    assert x.shape == (int((mnist_test.labels == 1).sum()), 1, 28, 28)
    # the formula the training loop and the evaluator used before sets had channels
    idx = torch.arange(0, 500, 7)
    before = mnist_test.images[idx].unsqueeze(1).float().div(127.5).sub(1.0)
    assert torch.equal(mnist_test.normalized(idx), before)


def test_mnist_through_the_registry(data_dir: Path, mnist_test: Split) -> None:
    split = load_dataset("mnist", data_dir, train=False)
    assert split.images.shape == (10_000, 1, 28, 28)
    assert torch.equal(split.images[:, 0], mnist_test.images)
    assert torch.equal(split.normalized(slice(0, 9)), mnist_test.normalized(slice(0, 9)))
    assert (split.channels, split.image_size, split.num_classes) == (1, 28, 10)
    assert has_dataset("mnist", data_dir)
    assert dataset_info("mnist", data_dir) == (tuple("0123456789"), 28, 1)


def test_mnist_at_32_is_padded_and_at_64_resized(data_dir: Path, mnist_test: Split) -> None:
    padded = load_dataset("mnist", data_dir, train=False, image_size=32)
    assert padded.images.shape == (10_000, 1, 32, 32)
    assert torch.equal(padded.images[:, 0, 2:30, 2:30], mnist_test.images)  # the digit, untouched
    border = padded.images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert int(border.sum()) == 0  # two pixels of background on every side
    big = load_dataset("mnist", data_dir, train=False, image_size=64, channels=3)
    assert big.images.shape == (10_000, 3, 64, 64)
    assert torch.equal(big.images[:, 0], big.images[:, 2])  # grey repeated into every channel
    # a resize, not a pad: the ink covers about the same fraction of the frame as at 28
    ink28 = (mnist_test.images > 127).float().mean()
    ink64 = (big.images[:, 0] > 127).float().mean()
    assert abs(float(ink64 / ink28) - 1) < 0.15


def test_missing_mnist_names_data_dir_and_the_download_switch(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound, match="data_dir: no mnist under .*GANFORGE_DOWNLOAD=0"):
        load_mnist(tmp_path)
    with pytest.raises(DataNotFound, match="data_dir: .* is not a directory"):
        load_dataset("mnist", tmp_path / "nowhere")
    assert not has_dataset("mnist", tmp_path)


# --- IDX files written the way the real sets are -----------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX as published: magic 0x00000803 (uint8, 3 dims) or 0x00000801, big-endian sizes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def upright_letters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images with an asymmetric mark (a bar along the top row, from the left) and labels 0..25."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
    images[:, 0, :20] = 255  # top row: transposed, this would be the left column
    return images, np.arange(n) % 26


def write_emnist(root: Path, gz: bool, n_train: int = 52, n_test: int = 26) -> dict[bool, tuple]:
    raw = root / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    ext = ".gz" if gz else ""
    written = {}
    for train, n, stem in ((True, n_train, "train"), (False, n_test, "test")):
        images, labels = upright_letters(n, seed=n)
        write_idx(raw / f"emnist-letters-{stem}-images-idx3-ubyte{ext}", images.transpose(0, 2, 1))
        write_idx(raw / f"emnist-letters-{stem}-labels-idx1-ubyte{ext}", labels + 1)  # files count 1..26
        written[train] = (images, labels)
    return written


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_emnist_letters_layout(tmp_path: Path, gz: bool) -> None:
    written = write_emnist(tmp_path, gz)
    assert has_dataset("emnist-letters", tmp_path)
    for train in (True, False):
        split = load_dataset("emnist-letters", tmp_path, train=train)
        images, labels = written[train]
        assert split.images.shape == (len(images), 1, 28, 28)
        assert torch.equal(split.images[:, 0], torch.from_numpy(images))  # upright again
        assert bool((split.images[:, 0, 0, :20] == 255).all())  # the bar is on top, not on the left
        assert torch.equal(split.labels, torch.from_numpy(labels).long())
        assert (int(split.labels.min()), int(split.labels.max())) == (0, 25)
    assert split.class_names == tuple("abcdefghijklmnopqrstuvwxyz")
    assert dataset_info("emnist-letters", tmp_path).num_classes == 26


def test_idx_reader_refuses_damaged_files(tmp_path: Path) -> None:
    write_emnist(tmp_path, gz=False)
    raw = tmp_path / "EMNIST" / "raw"
    labels = raw / "emnist-letters-test-labels-idx1-ubyte"
    write_idx(labels, np.zeros(26, dtype=np.uint8))  # a 0 label: outside 1..26
    with pytest.raises(DataNotFound, match="labels outside 1..26"):
        load_dataset("emnist-letters", tmp_path, train=False)
    images = raw / "emnist-letters-test-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(DataNotFound, match="damaged"):
        load_dataset("emnist-letters", tmp_path, train=False)
    images.write_bytes(b"\x1f\x8b not idx at all")
    with pytest.raises(DataNotFound, match="not an IDX file"):
        load_dataset("emnist-letters", tmp_path, train=False)


def test_idx_reader_on_other_types(tmp_path: Path) -> None:
    values = np.arange(-6, 6, dtype=">i4").reshape(3, 4)
    path = tmp_path / "ints.idx"
    path.write_bytes(struct.pack(">BBBB", 0, 0, 0x0C, 2) + struct.pack(">2I", 3, 4) + values.tobytes())
    got = datasets.read_idx(path)
    assert got.dtype == np.dtype("int32") and got.tolist() == values.tolist()


# --- Fashion-MNIST --------------------------------------------------------------------------
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")


@pytest.mark.skipif(not FASHION_DEBIAN.is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed (make tools installs it)")
def test_fashion_mnist_real_files(tmp_path: Path) -> None:
    train = load_dataset("fashion-mnist", tmp_path, train=True)  # nothing in tmp: the Debian copy
    test = load_dataset("fashion-mnist", tmp_path, train=False)
    assert train.images.shape == (60_000, 1, 28, 28) and test.images.shape == (10_000, 1, 28, 28)
    assert train.class_names == FASHION
    assert torch.bincount(train.labels).tolist() == [6000] * 10  # Fashion-MNIST is balanced
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert dataset_info("fashion-mnist", tmp_path) == (FASHION, 28, 1)
    colour = load_dataset("fashion-mnist", tmp_path, train=False, image_size=32, channels=3)
    assert colour.normalized(slice(0, 4)).shape == (4, 3, 32, 32)


def test_fashion_mnist_data_dir_first(tmp_path: Path) -> None:
    """torchvision's FashionMNIST/raw under the data dir wins over the system copy."""
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, n in (("train", 30), ("t10k", 10)):
        write_idx(raw / f"{stem}-images-idx3-ubyte.gz", np.full((n, 28, 28), 7, dtype=np.uint8))
        write_idx(raw / f"{stem}-labels-idx1-ubyte", np.arange(n) % 10)
    split = load_dataset("fashion-mnist", tmp_path, train=True)
    assert len(split) == 30 and int(split.images.max()) == 7
    assert split.class_names == FASHION


# --- image folders --------------------------------------------------------------------------
def banded(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """Green in the middle 3/4 along the longer side, red and blue 1/8 bands at its ends: a
    centre crop of the shorter side's square is all green, a squash would show red and blue."""
    w, h = size
    im = Image.new("RGB", size, GREEN)
    band = max(w, h) // 8
    first, last = ((0, 0, band, h), (w - band, 0, w, h)) if w >= h else ((0, 0, w, band), (0, h - band, w, h))
    im.paste((255, 0, 0), first)
    im.paste((0, 0, 255), last)
    return im.convert(mode)


def make_folder(root: Path, classes: dict[str, list[tuple[int, int]]], mode: str = "RGB",
                ext: str = ".png") -> Path:
    for name, sizes in classes.items():
        (root / name).mkdir(parents=True)
        for i, size in enumerate(sizes):
            banded(size, mode).save(root / name / f"img{i:03d}{ext}")
    return root


SIZES = [(128, 64), (64, 256), (90, 60), (200, 100), (33, 70)]  # wide, tall, 3:2, odd sides


@pytest.mark.parametrize("size", [28, 32, 64])
def test_imagefolder_colour_is_resized_and_centre_cropped(tmp_path: Path, size: int) -> None:
    root = make_folder(tmp_path / "pics", {"cats": SIZES * 4, "dogs": SIZES * 2})
    train = load_dataset(f"imagefolder:{root}", tmp_path, train=True, image_size=size, channels=3)
    test = load_dataset(f"imagefolder:{root}", tmp_path, train=False, image_size=size, channels=3)
    assert train.class_names == ("cats", "dogs")
    assert train.images.shape[1:] == (3, size, size) and train.images.dtype == torch.uint8
    assert len(train) + len(test) == 30 and (len(test)) == 2 + 1  # 1 in 10 per class held back
    assert torch.bincount(train.labels).tolist() == [18, 9]
    # every image, whatever its shape, becomes the green middle: cropped, not squashed
    green = torch.tensor(GREEN, dtype=torch.uint8).view(1, 3, 1, 1)
    assert bool((train.images == green).all()) and bool((test.images == green).all())


def test_imagefolder_split_is_stable_and_disjoint(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pics", {"a": [(40, 40)] * 25, "b": [(40, 40)] * 11})
    folder = datasets.scan_folder(root)
    train, test = datasets.split_files(folder, True), datasets.split_files(folder, False)
    assert sorted(train + test) == sorted(folder.files) and not set(train) & set(test)
    assert [c for _, c in test].count(0) == 2 and [c for _, c in test].count(1) == 1
    (root / "a" / "img024.png").unlink()  # a file leaves: the rest of the test split stays put
    again = datasets.split_files(datasets.scan_folder(root), False)
    assert set(again) - {("a/img024.png", 0)} <= set(test)


def test_imagefolder_grey_kept_and_converted(tmp_path: Path) -> None:
    make_folder(tmp_path / "grey", {"one": [(64, 32)] * 10, "two": [(32, 64)] * 10}, mode="L")
    info = dataset_info("imagefolder:grey", tmp_path)  # relative: inside the data dir
    assert info.conditional
    assert info == (("one", "two"), 32, 1)
    grey = load_dataset("imagefolder:grey", tmp_path, image_size=32, channels=1)
    expected = int(np.asarray(Image.new("RGB", (1, 1), GREEN).convert("L"))[0, 0])  # its luma
    assert grey.images.shape == (18, 1, 32, 32) and bool((grey.images == expected).all())
    as_colour = load_dataset("imagefolder:grey", tmp_path, image_size=32, channels=3)
    assert as_colour.images.shape == (18, 3, 32, 32) and bool((as_colour.images == expected).all())
    colour = make_folder(tmp_path / "colour", {"x": [(100, 50)] * 3}, mode="RGB")
    as_grey = load_dataset(f"imagefolder:{colour}", tmp_path, image_size=28, channels=1)
    assert as_grey.images.shape == (3, 1, 28, 28) and bool((as_grey.images == expected).all())


def test_imagefolder_one_class_is_unconditional(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "faces", {"all": [(90, 60), (64, 64), (70, 120)]}, ext=".jpg")
    info = dataset_info(f"imagefolder:{root}", tmp_path)
    assert (info.num_classes, info.conditional, info.image_size, info.channels) == (1, False, 60, 3)
    split = load_dataset(f"imagefolder:{root}", tmp_path, image_size=32, channels=3)
    assert split.labels.tolist() == [0, 0, 0] and split.num_classes == 1


def test_imagefolder_skips_hidden_and_non_images(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pics", {"a": [(40, 40)] * 2, "b": [(40, 40)] * 2})
    (root / ".ipynb_checkpoints").mkdir()
    (root / "a" / "README.txt").write_text("not an image")
    (root / "a" / ".hidden.png").write_bytes(b"junk")
    assert dataset_info(f"imagefolder:{root}", tmp_path).class_names == ("a", "b")
    assert len(load_dataset(f"imagefolder:{root}", tmp_path, image_size=28, channels=3)) == 4


# --- bad input ------------------------------------------------------------------------------
def field_of(err: pytest.ExceptionInfo) -> str:
    assert isinstance(err.value, InvalidInput)
    return err.value.field


def test_unknown_dataset_lists_the_names(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown dataset 'cifar10'; choose one of mnist, fashion-mnist, "
                                           "emnist-letters, imagefolder:PATH") as err:
        load_dataset("cifar10", tmp_path)
    assert field_of(err) == "dataset"
    with pytest.raises(InvalidInput, match="imagefolder: needs a folder"):
        dataset_info("imagefolder:", tmp_path)


def test_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    banded((40, 40)).save(tmp_path / "flat" / "loose.png")  # images but no class sub-folder
    with pytest.raises(InvalidInput, match="no class sub-folders") as err:
        load_dataset("imagefolder:flat", tmp_path, image_size=28, channels=3)
    assert field_of(err) == "dataset"
    root = make_folder(tmp_path / "pics", {"a": [(40, 40)]})
    (root / "b").mkdir()
    (root / "b" / "notes.txt").write_text("nothing here")
    with pytest.raises(InvalidInput, match="class folder 'b' .* holds no images"):
        dataset_info(f"imagefolder:{root}", tmp_path)
    with pytest.raises(DataNotFound, match="is not a directory"):
        load_dataset("imagefolder:missing", tmp_path, image_size=28, channels=3)


def test_mixed_modes_are_refused(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pics", {"a": [(40, 40)] * 3, "b": [(40, 40)] * 2})
    banded((40, 40), "L").save(root / "a" / "grey.png")
    with pytest.raises(InvalidInput, match=r"mixed modes .*RGB \(5 files, e.g. a/img000.png\); "
                                           r"L \(1 file, e.g. a/grey.png\)") as err:
        load_dataset(f"imagefolder:{root}", tmp_path, image_size=28, channels=3)
    assert field_of(err) == "dataset"
    with pytest.raises(InvalidInput, match="mixed modes"):
        dataset_info(f"imagefolder:{root}", tmp_path)


def test_unreadable_and_16_bit_images(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pics", {"a": [(40, 40)]})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(InvalidInput, match="a/broken.png .* not an image Pillow can read"):
        dataset_info(f"imagefolder:{root}", tmp_path)
    (root / "a" / "broken.png").unlink()
    Image.fromarray(np.full((8, 8), 40_000, dtype=np.uint16)).save(root / "a" / "deep.png")
    with pytest.raises(InvalidInput, match="a/deep.png .* has mode I"):
        dataset_info(f"imagefolder:{root}", tmp_path)


def test_sizes_and_channels_out_of_range(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pics", {"a": [(40, 40)] * 2})
    name = f"imagefolder:{root}"
    with pytest.raises(InvalidInput, match="channels: must be 1 .grey. or 3 .colour., got 2") as err:
        load_dataset(name, tmp_path, image_size=32, channels=2)
    assert field_of(err) == "channels"
    with pytest.raises(InvalidInput, match="image_size: must be one of 28, 32, 64 .*got 48") as err:
        load_dataset(name, tmp_path, image_size=48, channels=3)
    assert field_of(err) == "image_size"
    with pytest.raises(InvalidInput, match="image_size: the mlp family builds 28, 32 pixel images, got 64"):
        load_dataset(name, tmp_path, image_size=64, channels=3, family="mlp")
    big = load_dataset(name, tmp_path, image_size=64, channels=3, family="dcgan")
    assert big.images.shape[1:] == (3, 64, 64)


def test_a_folder_too_small_to_hold_a_test_split(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pics", {"a": [(40, 40)] * 9})
    assert len(load_dataset(f"imagefolder:{root}", tmp_path, train=True, image_size=28, channels=3)) == 9
    with pytest.raises(DataNotFound, match="no test images: a class needs at least 10"):
        load_dataset(f"imagefolder:{root}", tmp_path, train=False, image_size=28, channels=3)


# --- shared pieces ---------------------------------------------------------------------------
def test_sizes_agree_with_the_families() -> None:
    assert datasets.IMAGE_SIZES == models.IMAGE_SIZES
    assert datasets.CHANNELS == models.CHANNELS


def test_split_helpers() -> None:
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    split = Split(images, torch.arange(6) % 2, ("x", "y"))
    x = split.normalized(split.labels == 1)
    assert x.shape == (3, 3, 32, 32) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert torch.equal(normalize(images), images.float() / 127.5 - 1)
    assert torch.equal(normalize(images[:, 0]), normalize(images[:, :1]))  # (n, H, W) is one channel
    head = split.head(4)
    assert len(head) == 4 and head.class_names == ("x", "y") and (head.channels, head.image_size) == (3, 32)
