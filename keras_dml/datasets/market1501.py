"""Market-1501 person re-identification: file lists and tf.data pipelines.

Layout of `Market-1501-v15.09.15[.zip]`: `bounding_box_train/` (training),
`query/`, `bounding_box_test/` (the gallery), plus `gt_bbox/` and `gt_query/`.
An image name such as `0002_c1s1_000451_03.jpg` gives the person id (0002),
the camera (1..6), the sequence, the frame and the box index. Person id -1
marks junk boxes (dropped); 0000 marks distractors (kept as plain negatives).
"""

import contextlib
import os
import pathlib
import posixpath
import re
import warnings
import zipfile
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_dml import models
from keras_dml.checks import check_number
from keras_dml.data import archives
from keras_dml.data.image_files import check_jpeg, image_batches
from keras_dml.data.normalization import NORMALIZATIONS, check_normalization
from keras_dml.data.options import PipelineOptions
from keras_dml.datasets import registry
from keras_dml.reid.report import Ranking
from keras_dml.setting import Setting

DATASET_FOLDER = "Market-1501-v15.09.15"
SPLIT_FOLDERS = {
    "train": "bounding_box_train",
    "query": "query",
    "gallery": "bounding_box_test",
}
# Images (after dropping junk) and distinct person ids of the full dataset.
FULL_COUNTS = {
    "train": (12_936, 751),
    "query": (3_368, None),
    "gallery": (15_913, None),
}
NUM_TRAIN_IDS = 751
IMAGE_SIZE = (128, 64)
JUNK_ID = -1
DISTRACTOR_ID = 0
DOWNLOAD_HINT = (
    "Market-1501 is a manual download: get Market-1501-v15.09.15.zip from the "
    "dataset's page (Zheng et al., ICCV 2015) and pass the zip or the folder it "
    "extracts to."
)

_NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d+)_(\d{6})_(\d{2})\.jpg$")


class Market1501Split(NamedTuple):
    """One split's images, sorted by file name.

    `paths` are files on disk, or `<zip path>/<member>` when read from the zip.
    `labels` (training split only, else None) are 0-based, in sorted id order.
    """

    paths: list
    person_ids: np.ndarray
    camera_ids: np.ndarray
    labels: np.ndarray | None


def _check_split(split):
    if split not in SPLIT_FOLDERS:
        raise ValueError(
            f"`split` must be one of {tuple(SPLIT_FOLDERS)}. Received: split={split!r}"
        )


def parse_name(filename):
    """`(person id, camera id)` of an image name; ValueError naming it if malformed."""
    match = _NAME.match(os.path.basename(filename))
    if match is None or not 1 <= int(match.group(2)) <= 6:
        raise ValueError(
            f"{filename}: not a Market-1501 image name; expected "
            "<person id>_c<camera 1-6>s<sequence>_<frame>_<box>.jpg, e.g. "
            "0002_c1s1_000451_03.jpg."
        )
    return int(match.group(1)), int(match.group(2))


def _is_image(name):
    base = posixpath.basename(name)
    # Thumbs.db, .DS_Store and macOS "._" resource forks are not images.
    return base.lower().endswith(".jpg") and not base.startswith("._")


def _zip_layout(path):
    """Member names per split folder inside a Market-1501 zip."""
    by_folder = {}
    for name in archives.list_zip_members(path):
        parts = name.replace("\\", "/").split("/")
        if "__MACOSX" in parts or len(parts) < 2:
            continue
        by_folder.setdefault(parts[-2], []).append(name)
    return by_folder


def _resolve_root(root):
    """`root` as ("zip" | "folder", path) or a clear error."""
    root = os.fspath(root)
    if not os.path.exists(root):
        raise FileNotFoundError(
            f"Market-1501 root {root!r} does not exist. {DOWNLOAD_HINT}"
        )
    if archives.is_zip_archive(root):
        return "zip", root
    if os.path.isdir(root):
        if any(os.path.isdir(os.path.join(root, f)) for f in SPLIT_FOLDERS.values()):
            return "folder", root
        inner = os.path.join(root, DATASET_FOLDER)
        if os.path.isdir(inner):
            return _resolve_root(inner)
        if os.path.isfile(inner + ".zip"):
            return "zip", inner + ".zip"
    raise ValueError(
        f"{root!r} is not Market-1501: expected {DATASET_FOLDER}.zip or a folder with "
        f"{', '.join(SPLIT_FOLDERS.values())}. {DOWNLOAD_HINT}"
    )


def _list_split(root, split):
    """(kind, root, names, full): kind "zip" (names are members) or "folder"
    (names are file paths), sorted by file name, and whether this is the full
    dataset.

    Raises:
        ValueError: the split's folder is missing or holds no image.
    """
    kind, root = _resolve_root(root)
    folder = SPLIT_FOLDERS[split]
    if kind == "zip":
        by_folder = _zip_layout(root)
        full = "gt_bbox" in by_folder
        if folder not in by_folder:
            raise ValueError(f"{os.path.basename(root)}: has no {folder}/ folder.")
        names = [n for n in by_folder[folder] if _is_image(n)]
        location = f"{root}/{posixpath.dirname(by_folder[folder][0])}"
    else:
        directory = os.path.join(root, folder)
        if not os.path.isdir(directory):
            raise ValueError(f"{root}: has no {folder}/ folder.")
        names = [
            os.path.join(directory, n) for n in os.listdir(directory) if _is_image(n)
        ]
        full = os.path.isdir(os.path.join(root, "gt_bbox"))
        location = directory
    if not names:
        raise ValueError(f"no {split} images in {location}")
    names.sort(key=posixpath.basename)
    return kind, root, names, full


def _select(names):
    ids = np.array([parse_name(n) for n in names], dtype=np.int64).reshape(-1, 2)
    keep = ids[:, 0] != JUNK_ID
    return [n for n, k in zip(names, keep) if k], ids[keep, 0], ids[keep, 1]


def _check_counts(split, person_ids, where):
    images, ids = FULL_COUNTS[split]
    found_images, found_ids = len(person_ids), len(np.unique(person_ids))
    if found_images != images or (ids is not None and found_ids != ids):
        expected = f"{images:,} images" + (f" of {ids:,} ids" if ids else "")
        warnings.warn(
            f"{where}: the {split} split has {found_images:,} images of "
            f"{found_ids:,} ids; the full Market-1501 has {expected}. Some files "
            "are missing or extra.",
            stacklevel=4,  # The caller of read_market1501 / market1501_dataset.
        )


def _split_files(root, split):
    """(kind, resolved root, names, person ids, camera ids) of a split: junk
    dropped, and the counts checked when `root` is the full dataset."""
    kind, root, names, full = _list_split(root, split)
    names, person_ids, camera_ids = _select(names)
    if not names:
        raise ValueError(
            f"no {split} images in {root} other than junk (person id -1), "
            "which is never used"
        )
    if full:
        _check_counts(split, person_ids, root)
    return kind, root, names, person_ids, camera_ids


def train_labels(person_ids):
    """0-based labels: the sorted distinct training ids mapped to 0..n-1."""
    ids = np.unique(person_ids)
    return np.searchsorted(ids, person_ids).astype(np.int64)


def read_market1501(root, split="train"):
    """Lists one Market-1501 split.

    Args:
        root: the extracted `Market-1501-v15.09.15` folder (or a folder holding
            it or its zip), or `Market-1501-v15.09.15.zip`.
        split: "train" (`bounding_box_train`), "query" or "gallery"
            (`bounding_box_test`).

    Returns:
        A `Market1501Split(paths, person_ids, camera_ids, labels)`, sorted by
        file name; junk (id -1) dropped, distractors (id 0) kept, non-jpg files
        ignored. When `root` is the full dataset (it has `gt_bbox/`), the counts
        are checked against the published ones and a mismatch warns.

    Raises:
        ValueError: a `.jpg` whose name does not parse (named), a missing split
            folder, or a damaged/unsafe zip.
    """
    _check_split(split)
    kind, root, names, person_ids, camera_ids = _split_files(root, split)
    paths = [f"{root}/{n}" for n in names] if kind == "zip" else names
    labels = train_labels(person_ids) if split == "train" else None
    return Market1501Split(paths, person_ids, camera_ids, labels)


def iter_market1501_images(root, split):
    """Yields `(file name, JPEG bytes, person id, camera id, label)` per image of
    a split, in sorted order, reading one file at a time (label -1 outside
    "train"). Used by the TFDS builder."""
    _check_split(split)
    kind, root, names, person_ids, camera_ids = _split_files(root, split)
    labels = train_labels(person_ids) if split == "train" else np.full(len(names), -1)
    with contextlib.ExitStack() as stack:
        if kind == "zip":
            zf = stack.enter_context(zipfile.ZipFile(root))
            read = zf.read
        else:
            read = lambda path: pathlib.Path(path).read_bytes()  # noqa: E731
        for name, pid, camid, label in zip(names, person_ids, camera_ids, labels):
            yield posixpath.basename(name), read(name), int(pid), int(camid), int(label)


def check_queries_have_matches(query, gallery, where):
    """Raises ValueError (before any training) when no query has a valid
    match: a gallery image of the same person from another camera, what
    the evaluation ranks. Queries without one are skipped by it, as in the
    official code; with none at all, every epoch would train for nothing."""
    cameras = {}
    for person, camera in zip(gallery.person_ids, gallery.camera_ids):
        cameras.setdefault(int(person), set()).add(int(camera))
    valid = sum(
        bool(cameras.get(int(person), set()) - {int(camera)})
        for person, camera in zip(query.person_ids, query.camera_ids)
    )
    if valid == 0:
        raise ValueError(
            f"{where}: none of the {len(query.paths)} query images has a match in "
            "the gallery (bounding_box_test: the same person id from another "
            "camera), so nothing could be evaluated; the ids or camera ids in "
            "the file names are likely wrong."
        )


def decode_image(contents, filename, image_size):
    """JPEG bytes -> float32 `[height, width, 3]` in 0..255, resized bilinearly."""
    with tf.control_dependencies([check_jpeg(contents, filename)]):
        image = tf.io.decode_jpeg(contents, channels=3)
    image = tf.image.resize(image, image_size)
    image.set_shape((*image_size, 3))
    return image


def market1501_dataset(
    root,
    split,
    *,
    image_size=(256, 128),
    batch_size=32,
    augment=None,
    shuffle=None,
    random_erasing=0.0,
    normalization="imagenet",
    seed=None,
    drop_remainder=None,
    epochs=None,
    initial_epoch=0,
    input_context=None,
):
    """A Market-1501 `tf.data.Dataset`.

    Training yields `(images, labels)` with labels in 0..750; "query" and
    "gallery" yield `(images, {"person_id": ..., "camera_id": ...})` in sorted
    file order, unshuffled and unaugmented by default.

    Args:
        root: see `read_market1501`. From the zip, the split's JPEG bytes are
            read into memory (about 100 MB for the gallery); from a folder, each
            file is read by tf.data.
        split: "train", "query" or "gallery".
        image_size: `(height, width)` after a bilinear resize.
        batch_size: the global batch size.
        augment: random horizontal flip (default: on for "train").
        shuffle: reshuffle every epoch (default: on for "train").
        random_erasing: probability of erasing a random rectangle of each
            training image (Random Erasing, Zhong et al.: 2-40% of the image,
            aspect 0.3-3.3, filled with the mean pixel of `normalization`,
            i.e. 0 after normalizing; see `augment.random_erase`); 0 for none.
            Drawn from (seed, epoch, element) like the order and flips, so a
            resumed run erases the same rectangles.
        normalization: a name from `keras_dml.data.normalization`:
            "imagenet" (mean/std), "mobilenet" ([-1, 1]), "none" (0..255), ...:
            match the backbone's pretrained weights.
        seed, drop_remainder, epochs, initial_epoch, input_context: as in
            `keras_dml.data.cifar100_dataset`.

    A corrupt or truncated JPEG stops iteration with an error naming the file.
    """
    _check_split(split)
    mean, std = check_normalization(normalization)
    check_number("`random_erasing`", random_erasing, 0, 1, why=" (a probability)")
    training = split == "train"
    options = PipelineOptions(
        batch_size,
        mean,
        std,
        augment=training if augment is None else augment,
        shuffle=training if shuffle is None else shuffle,
        seed=seed,
        drop_remainder=training if drop_remainder is None else drop_remainder,
        epochs=epochs,
        initial_epoch=initial_epoch,
        input_context=input_context,
    )
    return market1501_batches(root, split, image_size, options, random_erasing)


def market1501_batches(root, split, image_size, options, random_erasing=0.0):
    """`market1501_dataset` with its options as one `PipelineOptions`
    (`options.mean`: the normalization's, which also fills erased pixels)."""
    image_size = tuple(int(s) for s in image_size)
    training = split == "train"
    kind, resolved, names, person_ids, camera_ids = _split_files(root, split)
    filenames = tf.constant([posixpath.basename(n) for n in names])
    if kind == "zip":
        blobs = tf.constant(archives.read_zip_members(resolved, names))
        read = lambda i: tf.gather(blobs, i)  # noqa: E731
    else:
        paths = tf.constant(names)
        read = lambda i: tf.io.read_file(tf.gather(paths, i))  # noqa: E731
    targets = (
        {"label": train_labels(person_ids).astype(np.int32)}
        if training
        else {
            "person_id": person_ids.astype(np.int32),
            "camera_id": camera_ids.astype(np.int32),
        }
    )
    targets = {k: tf.constant(v) for k, v in targets.items()}

    def load_one(index):
        return decode_image(read(index), tf.gather(filenames, index), image_size)

    return image_batches(
        count=len(names),
        load_one=load_one,
        targets=targets["label"] if training else targets,
        image_size=image_size,
        options=options,
        random_erasing=random_erasing if training else 0.0,
        # The mean pixel in 0..255, the value that normalizes to 0.
        erase_fill=255.0 * np.asarray(options.mean, np.float32),
        # Drawn even when erasing is off: turning it on changes no flip.
        erasing_randoms=True,
    )


# --------------------------------------------------------- the dataset

# The settings of re-ID training and ranking (also those of the TFDS
# builder's runs, which train on the same data).
REID_SETTINGS = (
    Setting(
        "random_erasing",
        0.0,
        "Probability of Random Erasing (Zhong et al.) per training image (re-ID).",
        "float",
        "data",
        bounds=dict(low=0, high=1, why=" (a probability)"),
    ),
    Setting(
        "weights",
        "imagenet",
        "Backbone initialization of re-ID peers: imagenet or none.",
        "str",
        "peers",
        choices=("imagenet", "none"),
        dataset_default=True,
    ),
    Setting(
        "dropout",
        0.0,
        "Dropout before each re-ID classifier.",
        "float",
        "peers",
        bounds=dict(low=0, high=1, high_open=True),
    ),
    Setting(
        "metric",
        "euclidean",
        "Feature distance for re-ID ranking: euclidean or cosine.",
        "str",
        "evaluation",
        choices=("euclidean", "cosine"),
    ),
    Setting(
        "flip_test",
        False,
        "Average each re-ID test image's features with its mirror's.",
        "bool",
        "evaluation",
    ),
)


def _check(config):
    # Named peers only (an unknown name is the settings' own problem).
    peers = [models.canonical_name(p) for p in config.peers or ()]
    not_reid = [p for p in peers if p in models.NAMES and p not in models.REID_NAMES]
    if not_reid:
        return [
            f"--peers: --dataset={config.dataset} ranks images by the peers' "
            f"embeddings; {not_reid[0]} has none. Re-ID peers: "
            f"{', '.join(models.REID_NAMES)}"
        ]
    return []


def _load(config):
    if config.data_dir is None:
        raise ValueError(f"--dataset=market1501 needs --data_dir. {DOWNLOAD_HINT}")
    train = read_market1501(config.data_dir, "train")
    # Evaluation needs both: an empty one must stop the run before training.
    query, gallery = (
        read_market1501(config.data_dir, split) for split in ("query", "gallery")
    )
    check_queries_have_matches(query, gallery, config.data_dir)
    size = tuple(config.image_size)
    normalization = "imagenet"  # What every re-ID peer takes (models.reid).
    mean, std = NORMALIZATIONS[normalization]

    def make_train(options):
        return market1501_batches(
            config.data_dir, "train", size, options, config.random_erasing
        )

    def splits(split):  # The query and the gallery, for the ranking.
        return market1501_dataset(
            config.data_dir,
            split,
            image_size=size,
            batch_size=64,
            normalization=normalization,
        )

    return registry.LoadedData(
        num_classes=int(train.labels.max()) + 1,
        image_shape=(*size, 3),
        num_train=len(train.paths),
        preprocessing=normalization,
        train=make_train,
        train_options=PipelineOptions(config.batch_size, mean, std, augment=True),
        validation=None,
        evaluation=Ranking(splits, metric=config.metric, flip=config.flip_test),
    )


DATASET = registry.register(
    registry.Dataset(
        "market1501",
        Ranking,
        {
            # The official DML code's: MobileNet v1 from ImageNet weights, Adam
            # lr 2e-4 (beta1 0.5), batch 16, label smoothing 0.1.
            "peers": ("reid_mobilenet", "reid_mobilenet"),
            "epochs": 60,
            "batch_size": 16,
            "optimizer": "adam",
            "lr": 2e-4,
            "beta1": 0.5,
            "label_smoothing": 0.1,
            "image_size": (256, 128),
            "weights": "imagenet",
        },
        {**registry.SMALL, "weights": "none", "image_size": (64, 32)},
        _load,
        "Market-1501 person re-identification (its zip or folder)",
        DOWNLOAD_HINT,
        check=_check,
        settings=(registry.IMAGE_SIZE, *REID_SETTINGS),
    )
)
