"""Labelled image sets by name: where each one's files are, how to read them, its class names.

Names a job spec may use (``DATASETS`` plus one scheme):

- ``mnist``, ``fashion-mnist``, ``emnist-letters``: four IDX files each (MNIST's format), in
  torchvision's layout under the data dir (``<data_dir>/MNIST/raw``, ``FashionMNIST/raw``,
  ``EMNIST/raw``), gzipped or not; Fashion-MNIST is also found where Debian's
  ``dataset-fashion-mnist`` package puts it. All are 1x28x28 natively.
- ``imagefolder:PATH``: one sub-folder per class (torchvision's ImageFolder convention), any
  image size. A relative PATH is taken inside the data dir.

This module is torch-free (numpy and Pillow, both core dependencies) so that a job spec can be
checked (:func:`check_request`, :func:`dataset_info`) without the training stack;
``trainer.data`` turns its arrays into tensors and does the downloads (through torchvision).

Requests that differ from the native format:

- ``image_size``: an IDX set (28) asked for 32 is zero-padded by 2 pixels a side (the LeNet-5
  convention: the background is 0 in all three sets, strokes keep their scale, no interpolation);
  asked for 64 it is resized bilinearly (padding would leave the object a small patch in the
  middle). An image folder is always resized so that its shorter side is ``image_size``, then
  centre-cropped (torchvision's ``Resize`` + ``CenterCrop``, bilinear).
- ``channels``: grey data asked for 3 channels repeats its plane; colour data asked for 1
  channel is converted to luma (Pillow's ``L``, ITU-R 601-2).

An image folder's images must all have the same Pillow mode (all ``RGB``, or all ``L``, ...):
a set that mixes them is refused rather than converted, because which channel count the set
"is" would be a guess, and a grey minority converted to colour is a mode the GAN can learn.
Alpha is dropped. 16-bit and float images (modes ``I``, ``I;16``, ``F``) are refused: Pillow
clips rather than scales them down to 8 bits. Hidden entries (names starting with ``.``) are
skipped. A folder has no test split of its own: every class holds back its ``1/TEST_EVERY``
images whose path hashes lowest (stable as files are added) as the test split.
"""

import gzip
import hashlib
import math
import os
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from ganforge.errors import DataNotFound, InvalidInput

FIELD = "dataset"  # the job spec field the name comes from
IMAGEFOLDER = "imagefolder:"
# Every side some GAN family builds (models.IMAGE_SIZES; this module stays torch-free, a test
# keeps the two equal). Which family builds which: models.supported_sizes.
IMAGE_SIZES: tuple[int, ...] = (28, 32, 64)
CHANNELS: tuple[int, ...] = (1, 3)
PAD_UP_TO = 4  # an IDX set asked for a side at most this much larger is padded, not resized
TEST_EVERY = 10  # an image folder holds back one image in TEST_EVERY (per class) for testing
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
# 8-bit Pillow modes and their native channel count (palettes are colour tables)
MODE_CHANNELS = {"1": 1, "L": 1, "LA": 1, "P": 3, "PA": 3, "RGB": 3, "RGBA": 3, "CMYK": 3,
                 "YCbCr": 3, "LAB": 3, "HSV": 3}


class DatasetInfo(NamedTuple):
    """What a set is natively: enough to check a job spec before any image is decoded."""

    class_names: tuple[str, ...]
    image_size: int  # native side; an image folder: the smallest shorter side among its images
    channels: int  # native channels, 1 or 3

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def conditional(self) -> bool:
        """False for a one-class set: train it unconditionally (ModelConfig num_classes=0)."""
        return self.num_classes > 1


@dataclass(frozen=True)
class Arrays:
    """One split as numpy arrays: what ``trainer.data.Split`` wraps."""

    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,), 0 .. len(class_names) - 1
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class IdxSet:
    """A set stored as four IDX files in torchvision's layout: one entry of ``DATASETS``."""

    folder: str  # <data_dir>/<folder>/raw
    class_names: tuple[str, ...]
    prefix: str = ""  # of every file name: EMNIST's "emnist-letters-"
    test_stem: str = "t10k"  # t10k-images-idx3-ubyte (MNIST) or <prefix>test-images-... (EMNIST)
    first_label: int = 0  # the label of class 0 in the files (EMNIST letters count from 1)
    transposed: bool = False  # EMNIST stores each image column by column
    system_dirs: tuple[str, ...] = ()  # where an OS package installs the same files
    torchvision: str = "MNIST"  # the torchvision dataset class that downloads it
    torchvision_split: str | None = None  # its ``split`` argument (EMNIST)
    side: int = 28
    # the set's own recipe: the training settings it changes from the reference recipe (MNIST's),
    # measured in BENCHMARKS.md; a spec's own values win (``TrainConfig``, ``recipe_for``)
    recipe: tuple[tuple[str, Any], ...] = ()

    def file_names(self, train: bool) -> tuple[str, str]:
        stem = self.prefix + ("train" if train else self.test_stem)
        return f"{stem}-images-idx3-ubyte", f"{stem}-labels-idx1-ubyte"

    def dirs(self, data_dir: Path) -> list[Path]:
        """Where to look, in order: the data dir first, then the system's copy."""
        return [Path(data_dir) / self.folder / "raw", *map(Path, self.system_dirs)]


DATASETS: dict[str, IdxSet] = {
    "mnist": IdxSet("MNIST", tuple("0123456789")),
    "fashion-mnist": IdxSet(
        "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
         "Ankle boot"),
        system_dirs=("/usr/share/datasets/fashion-mnist",), torchvision="FashionMNIST",
        # R1 and a higher rate: FCD 193 -> 98 and the independent reader 0.888 -> 0.903 at 3000
        # steps (BENCHMARKS.md, "Data sets"), with the D and the precision it was measured with
        # (no extra conv, fp32, EMA 0.999, rates held to the end: bf16, batch 128, EMA 0.995 and
        # the tail schedule and the class loss came later, measured on MNIST only)
        recipe=(("r1_gamma", 0.2), ("lr_g", 6e-4), ("lr_d", 6e-4), ("d_extra_convs", 0),
                ("amp", "off"), ("batch_size", 64), ("ema_decay", 0.999), ("lr_decay", "none"),
                ("class_loss", 0.0))),
    "emnist-letters": IdxSet(
        "EMNIST", tuple("abcdefghijklmnopqrstuvwxyz"), prefix="emnist-letters-", test_stem="test",
        first_label=1, transposed=True, torchvision="EMNIST", torchvision_split="letters"),
}


def dataset_names() -> list[str]:
    """What the ``dataset`` field accepts, for messages and help texts."""
    return [*DATASETS, IMAGEFOLDER + "PATH"]


def recipe_for(name: str) -> dict[str, Any]:
    """The training settings set ``name`` changes from the reference recipe (none for an image
    folder, or a name that is not a set: validating the name is ``idx_set``'s job)."""
    entry = DATASETS.get(name)
    return dict(entry.recipe) if entry else {}


def idx_set(name: str) -> IdxSet | None:
    """The registry entry of ``name``; None for an image folder; unknown names are refused."""
    if name.startswith(IMAGEFOLDER):
        if not name[len(IMAGEFOLDER):].strip():
            raise InvalidInput(FIELD, f"{IMAGEFOLDER} needs a folder: {IMAGEFOLDER}PATH")
        return None
    if name not in DATASETS:
        raise InvalidInput(FIELD, f"unknown dataset {name!r}; choose one of {', '.join(dataset_names())}")
    return DATASETS[name]


def check_request(name: str, *, image_size: int, channels: int) -> None:
    """Refuse what no set can give: an unknown name, a side no family builds, 2 channels.
    (Whether *the chosen family* builds the side is ``models.check_image_size``.)"""
    idx_set(name)
    if channels not in CHANNELS:
        raise InvalidInput("channels", f"must be 1 (grey) or 3 (colour), got {channels}")
    if image_size not in IMAGE_SIZES:
        raise InvalidInput("image_size", f"must be one of {', '.join(map(str, IMAGE_SIZES))} "
                                         f"(the sides the GAN families build), got {image_size}")


def dataset_info(name: str, data_dir: Path) -> DatasetInfo:
    """Class names, native side and channels. Static for the IDX sets (no file is read); an
    image folder is scanned (headers only) and refused when malformed."""
    entry = idx_set(name)
    if entry is not None:
        return DatasetInfo(entry.class_names, entry.side, 1)
    folder = scan_folder(folder_path(name, data_dir))
    return DatasetInfo(folder.class_names, folder.min_side, MODE_CHANNELS[folder.mode])


def has_dataset(name: str, data_dir: Path) -> bool:
    """Whether both splits are on disk (an image folder: whether the folder exists)."""
    entry = idx_set(name)
    if entry is None:
        return folder_path(name, data_dir).is_dir()
    return all(find_idx(entry, data_dir, train) is not None for train in (True, False))


def load_arrays(name: str, data_dir: Path, *, train: bool, image_size: int, channels: int) -> Arrays:
    """One split of ``name`` at ``channels x image_size x image_size`` (see the module doc for
    how other sizes and channel counts are made). Raises ``DataNotFound`` when it is not on disk."""
    check_request(name, image_size=image_size, channels=channels)
    entry = idx_set(name)
    if entry is None:
        return load_folder(scan_folder(folder_path(name, data_dir)), train=train,
                           image_size=image_size, channels=channels)
    images, labels = read_idx_split(entry, name, data_dir, train)
    return Arrays(fit_square(images, image_size, channels), labels, entry.class_names)


# --- IDX files ----------------------------------------------------------------------------
# magic: 0, 0, type code, number of dimensions; then one big-endian uint32 per dimension
IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (``.gz`` or plain) as an array in native byte order."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataNotFound(f"{FIELD}: cannot read {path}: {e}") from e
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_TYPES:
        raise DataNotFound(f"{FIELD}: {path} is not an IDX file (magic {data[:4].hex() or 'missing'})")
    ndim, dtype = data[3], IDX_TYPES[data[2]]
    start = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:start]) if len(data) >= start else ()
    expected = start + math.prod(dims) * dtype.itemsize
    if len(dims) != ndim or len(data) != expected:
        raise DataNotFound(f"{FIELD}: {path} is damaged: {len(data)} bytes, its header says {expected}")
    return np.frombuffer(data, dtype, offset=start).reshape(dims).astype(dtype.newbyteorder("="))


def find_idx(entry: IdxSet, data_dir: Path, train: bool) -> tuple[Path, Path] | None:
    """The (images, labels) files of one split, plain or gzipped, from the first place with both."""
    for folder in entry.dirs(data_dir):
        found = [next((p for p in (folder / n, folder / f"{n}.gz") if p.is_file()), None)
                 for n in entry.file_names(train)]
        if found[0] is not None and found[1] is not None:
            return found[0], found[1]
    return None


def read_idx_split(entry: IdxSet, name: str, data_dir: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 1, 28, 28) upright and labels int64 counted from 0."""
    paths = find_idx(entry, data_dir, train)
    if paths is None:
        where = " or ".join(str(d) for d in entry.dirs(data_dir))
        raise DataNotFound(f"{FIELD}: no {name} {'train' if train else 'test'} files "
                           f"({', '.join(entry.file_names(train))}, .gz or not) under {where}")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.dtype != np.uint8 or images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataNotFound(f"{FIELD}: {paths[0].name} and {paths[1].name} are not a uint8 image "
                           f"stack and its labels (shapes {images.shape}, {labels.shape})")
    labels = labels.astype(np.int64) - entry.first_label
    if labels.size and (labels.min() < 0 or labels.max() >= len(entry.class_names)):
        raise DataNotFound(f"{FIELD}: {paths[1]} holds labels outside {entry.first_label}.."
                           f"{entry.first_label + len(entry.class_names) - 1}")
    if entry.transposed:
        images = images.transpose(0, 2, 1)
    return np.ascontiguousarray(images[:, None]), labels


def fit_square(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Square grey (N, 1, s, s) images to (N, channels, size, size): padded when ``size`` is at
    most ``PAD_UP_TO`` larger, resized bilinearly otherwise; the plane repeated for colour."""
    side = images.shape[-1]
    if 0 < size - side <= PAD_UP_TO:
        before = (size - side) // 2
        edge = (before, size - side - before)
        images = np.pad(images, ((0, 0), (0, 0), edge, edge))
    elif size != side:
        images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR))
                           for im in images[:, 0]])[:, None]
    return np.repeat(images, channels, axis=1) if channels != images.shape[1] else images


# --- image folders ------------------------------------------------------------------------
@dataclass(frozen=True)
class Folder:
    """A scanned image folder: its classes and files, checked, nothing decoded yet."""

    root: Path
    class_names: tuple[str, ...]
    files: tuple[tuple[str, int], ...]  # (path relative to root, class index), sorted
    mode: str  # the one Pillow mode of every image
    min_side: int  # the smallest shorter side


def folder_path(name: str, data_dir: Path) -> Path:
    path = Path(name[len(IMAGEFOLDER):]).expanduser()
    return path if path.is_absolute() else Path(data_dir) / path


def _images_under(folder: Path) -> list[Path]:
    found = []
    for here, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(here) / n for n in sorted(names)
                  if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def _header(root: Path, path: Path) -> tuple[str, int]:
    """(mode, shorter side) of one image, refusing what cannot be read or kept 8-bit."""
    rel = path.relative_to(root).as_posix()
    try:
        with Image.open(path) as im:
            mode, side = im.mode, min(im.size)
    except (UnidentifiedImageError, OSError) as e:
        raise InvalidInput(FIELD, f"{rel} in {root} is not an image Pillow can read ({e})") from e
    if mode not in MODE_CHANNELS:
        raise InvalidInput(FIELD, f"{rel} in {root} has mode {mode}; images must be 8-bit grey or "
                                  f"colour ({', '.join(MODE_CHANNELS)})")
    return mode, side


def _one_mode(root: Path, modes: dict[str, str]) -> str:
    """The single mode of the set; a set mixing modes is refused with counts and an example."""
    counts = Counter(modes.values())
    if len(counts) == 1:
        return next(iter(counts))
    parts = [f"{m} ({n} file{'s' if n > 1 else ''}, e.g. {next(f for f, fm in modes.items() if fm == m)})"
             for m, n in counts.most_common()]
    raise InvalidInput(FIELD, f"images of mixed modes in {root}: {'; '.join(parts)}; convert them "
                              "to one mode (all RGB or all L) first")


def scan_folder(root: Path) -> Folder:
    """Check an ImageFolder tree: class sub-folders (sorted names are the class names), each
    holding at least one image, every image readable and of one mode."""
    if not root.is_dir():
        raise DataNotFound(f"{FIELD}: {root} is not a directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise InvalidInput(FIELD, f"{root} has no class sub-folders: put the images in {root}/<class>/ "
                                  "(a single sub-folder makes an unconditional set)")
    files: list[tuple[str, int]] = []
    for index, cls in enumerate(classes):
        found = _images_under(root / cls)
        if not found:
            raise InvalidInput(FIELD, f"class folder {cls!r} in {root} holds no images "
                                      f"({', '.join(IMAGE_EXTENSIONS)})")
        files += [(p.relative_to(root).as_posix(), index) for p in found]
    headers = {rel: _header(root, root / rel) for rel, _ in files}
    mode = _one_mode(root, {rel: h[0] for rel, h in headers.items()})
    return Folder(root, tuple(classes), tuple(files), mode, min(h[1] for h in headers.values()))


def _held_out(rel: str) -> bytes:
    return hashlib.sha1(rel.encode()).digest()


def split_files(folder: Folder, train: bool) -> list[tuple[str, int]]:
    """Per class, the ``len // TEST_EVERY`` files whose path hashes lowest are the test split."""
    test: set[str] = set()
    for index in range(len(folder.class_names)):
        members = sorted((rel for rel, c in folder.files if c == index), key=_held_out)
        test.update(members[: len(members) // TEST_EVERY])
    return [(rel, c) for rel, c in folder.files if (rel in test) != train]


def load_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image as uint8 (channels, size, size): converted, shorter side resized, centre-cropped."""
    with Image.open(path) as f:
        im = f.convert("L" if channels == 1 else "RGB")
    w, h = im.size
    short = min(w, h)
    if short != size:  # the shorter side becomes ``size``, the longer keeps the aspect ratio
        im = im.resize((size * w // short, size * h // short), Image.Resampling.BILINEAR)
        w, h = im.size
    left, top = int(round((w - size) / 2)), int(round((h - size) / 2))
    arr = np.asarray(im.crop((left, top, left + size, top + size)))
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load_folder(folder: Folder, *, train: bool, image_size: int, channels: int) -> Arrays:
    """Decode one split of a scanned folder (the whole split is held in memory, as MNIST is)."""
    files = split_files(folder, train)
    if not files:
        raise DataNotFound(f"{FIELD}: {folder.root} has no test images: a class needs at least "
                           f"{TEST_EVERY} images to hold one back")
    images = np.stack([load_image(folder.root / rel, image_size, channels) for rel, _ in files])
    labels = np.array([c for _, c in files], dtype=np.int64)
    return Arrays(np.ascontiguousarray(images), labels, folder.class_names)
