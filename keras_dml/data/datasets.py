"""The dataset registry: each dataset a training run can use, declared once.

A dataset gives its number of classes, its input normalization, its default
settings (peers, epochs, optimizer, ...), its training pipeline built from
(seed, epoch, input context) so that exact resume and multi-worker slicing
hold, and its evaluation (top-1 for classification, CMC/mAP for re-ID).
`keras_dml.training.run` does the rest the same way for all.

Adding a dataset is a reader and an entry here.
"""

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from keras_dml.data import cifar10, cifar100, folders, market1501
from keras_dml.data.arrays import array_dataset
from keras_dml.data.epochs import steps_per_epoch
from keras_dml.data.normalization import NORMALIZATIONS


@dataclasses.dataclass
class LoadedData:
    """A dataset read for one run.

    Attributes:
        num_classes: classes the peers predict.
        image_shape: `(height, width, channels)` the peers take.
        num_train: training examples.
        preprocessing: the normalization (a name, or `(mean, std)`), which
            the exported models apply to raw pixels.
        train: `(seed, epochs, initial_epoch, input_context) -> tf.data` of
            the training epochs from `initial_epoch` on.
        validation: the evaluation split as `(images, labels)` batches, or
            None (re-ID evaluates by ranking instead).
        evaluate: `(model, verbose) -> results` at the end of training.
    """

    num_classes: int
    image_shape: tuple
    num_train: int
    preprocessing: object
    train: Callable
    validation: object
    evaluate: Callable

    def steps_per_epoch(self, batch_size, cap=None):
        full = steps_per_epoch(self.num_train, batch_size)
        return min(cap or full, full)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One registry entry.

    Attributes:
        name: the `--dataset` value.
        task: "classification" (top-1) or "reid" (CMC / mAP ranking).
        defaults: settings this dataset changes (see
            `keras_dml.training.config.SETTINGS`).
        smoke_defaults: settings of `--smoke_test` runs.
        load: `config -> LoadedData`; reads and checks the data, writes nothing.
        description: one line for `--help` and errors.
    """

    name: str
    task: str
    defaults: dict
    smoke_defaults: dict
    load: Callable
    description: str


# ---------------------------------------------------------- classification


def _top1(validation):
    def evaluate(model, verbose=0):
        logs = model.evaluate(validation, return_dict=True, verbose=verbose)
        top1 = {
            f"peer{i}": float(logs[f"peer{i}_accuracy"])
            for i in range(len(model.peers))
        }
        top1["ensemble"] = float(logs["ensemble_accuracy"])
        return {"top1": top1}

    return evaluate


def _array_data(
    config, train, test, mean, std, *, num_classes, augment, padding=4, flip=True
):
    """LoadedData over uint8 image arrays (CIFAR, digits)."""
    (train_images, train_labels), (test_images, test_labels) = train, test

    def make_train(seed, epochs, initial_epoch, input_context=None):
        return array_dataset(
            train_images,
            train_labels,
            batch_size=config.batch_size,
            mean=mean,
            std=std,
            augment=augment,
            padding=padding,
            flip=flip,
            shuffle=True,
            seed=seed,
            drop_remainder=True,
            epochs=epochs,
            initial_epoch=initial_epoch,
            input_context=input_context,
        )

    validation = array_dataset(
        test_images, test_labels, batch_size=config.batch_size, mean=mean, std=std
    )
    return LoadedData(
        # The dataset's, not the largest label seen: a subset (a smoke test)
        # may miss the last classes.
        num_classes=num_classes,
        image_shape=tuple(train_images.shape[1:]),
        num_train=len(train_images),
        preprocessing=(tuple(mean), tuple(std)),
        train=make_train,
        validation=validation,
        evaluate=_top1(validation),
    )


def _smoke_arrays(config, read, num_classes, shape):
    """Two training batches and one test batch: a slice of the real data with
    a data_dir, else random images."""
    sizes = {"train": 2 * config.batch_size, "test": config.batch_size}
    if config.data_dir is not None:
        return tuple(
            tuple(a[: sizes[s]] for a in read(s, config.data_dir))
            for s in ("train", "test")
        )
    rng = np.random.default_rng(config.seed)
    return tuple(
        (
            rng.integers(0, 256, size=(n, *shape), dtype=np.uint8),
            rng.integers(0, num_classes, size=n),
        )
        for n in sizes.values()
    )


def _cifar(read, num_classes, mean, std):
    def load(config):
        if config.smoke_test:
            train, test = _smoke_arrays(config, read, num_classes, (32, 32, 3))
        else:
            train, test = read("train", config.data_dir), read("test", config.data_dir)
        return _array_data(
            config, train, test, mean, std, num_classes=num_classes, augment=True
        )

    return load


def _load_digits(config):
    from keras_dml.data.digits import load_digits_split

    train, test = load_digits_split(config.train_size)
    if config.smoke_test:
        train = tuple(a[: 2 * config.batch_size] for a in train)
        test = tuple(a[: config.batch_size] for a in test)
    pixels = train[0].astype(np.float32) / 255.0
    # One channel: its own statistics, as the quickstart measured them.
    mean, std = (float(pixels.mean()),), (float(pixels.std()),)
    # A 1-pixel shift, no flip: mirrored digits are other shapes.
    return _array_data(
        config,
        train,
        test,
        mean,
        std,
        num_classes=10,
        augment=True,
        padding=1,
        flip=False,
    )


def _load_folder(config):
    if config.data_dir is None:
        raise ValueError(
            "--dataset=folder needs --data_dir holding train/<class>/ and "
            "test/<class>/ image folders."
        )
    train = folders.read_image_folders(config.data_dir, "train")
    test = folders.read_image_folders(config.data_dir, "test")
    if config.smoke_test:
        train = train._replace(
            paths=train.paths[: 2 * config.batch_size],
            labels=train.labels[: 2 * config.batch_size],
        )
    size = tuple(config.image_size)
    mean, std = NORMALIZATIONS["imagenet"]

    def make_train(seed, epochs, initial_epoch, input_context=None):
        return folders.image_folder_dataset(
            paths=train.paths,
            labels=train.labels,
            image_size=size,
            batch_size=config.batch_size,
            mean=mean,
            std=std,
            augment=True,
            shuffle=True,
            seed=seed,
            drop_remainder=True,
            epochs=epochs,
            initial_epoch=initial_epoch,
            input_context=input_context,
        )

    validation = folders.image_folder_dataset(
        paths=test.paths,
        labels=test.labels,
        image_size=size,
        batch_size=config.batch_size,
        mean=mean,
        std=std,
    )
    return LoadedData(
        num_classes=len(train.class_names),
        image_shape=(*size, 3),
        num_train=len(train.paths),
        preprocessing="imagenet",
        train=make_train,
        validation=validation,
        evaluate=_top1(validation),
    )


# ------------------------------------------------------------------- re-ID


def _load_market(config):
    from keras_dml.reid.report import evaluate_cohort

    if config.data_dir is None:
        raise ValueError(
            f"--dataset=market1501 needs --data_dir. {market1501.DOWNLOAD_HINT}"
        )
    train = market1501.read_market1501(config.data_dir, "train")
    # Evaluation needs both: an empty one must stop the run before training.
    for split in ("query", "gallery"):
        market1501.read_market1501(config.data_dir, split)
    size = tuple(config.image_size)
    normalization = "imagenet"  # What every re-ID peer takes (models.reid).

    def make_train(seed, epochs, initial_epoch, input_context=None):
        return market1501.market1501_dataset(
            config.data_dir,
            "train",
            image_size=size,
            batch_size=config.batch_size,
            random_erasing=config.random_erasing,
            normalization=normalization,
            seed=seed,
            epochs=epochs,
            initial_epoch=initial_epoch,
            input_context=input_context,
        )

    def evaluate(model, verbose=0):
        reid = evaluate_cohort(
            model,
            config.data_dir,
            image_size=size,
            normalization=normalization,
            metric=config.metric,
            flip=config.flip_test,
            verbose=verbose,
        )
        return {"reid": reid}

    return LoadedData(
        num_classes=int(train.labels.max()) + 1,
        image_shape=(*size, 3),
        num_train=len(train.paths),
        preprocessing=normalization,
        train=make_train,
        validation=None,
        evaluate=evaluate,
    )


# ---------------------------------------------------------------- registry

_CIFAR100_DEFAULTS = {
    # The paper's: 200 epochs, batch 64, SGD with Nesterov momentum 0.9, lr 0.1
    # divided by 10 after epochs 60, 120 and 180; weight decay 5e-4.
    "peers": ("resnet32", "resnet32"),
    "epochs": 200,
    "batch_size": 64,
    "optimizer": "sgd",
    "lr": 0.1,
    "lr_schedule": "piecewise",
    "lr_milestones": (60, 120, 180),
    "weight_decay": 5e-4,
}
_SMALL = {"epochs": 2, "batch_size": 8, "steps_per_epoch": 2}

REGISTRY = {
    "cifar100": Dataset(
        "cifar100",
        "classification",
        _CIFAR100_DEFAULTS,
        _SMALL,
        _cifar(cifar100.load_cifar100, 100, cifar100.MEAN, cifar100.STD),
        "CIFAR-100 (the archive, its folder, or TFDS without --data_dir)",
    ),
    "cifar10": Dataset(
        "cifar10",
        "classification",
        _CIFAR100_DEFAULTS,
        _SMALL,
        _cifar(cifar10.load_cifar10, 10, cifar10.MEAN, cifar10.STD),
        "CIFAR-10 (the archive, its folder, or TFDS without --data_dir)",
    ),
    "market1501": Dataset(
        "market1501",
        "reid",
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
        {**_SMALL, "weights": "none", "image_size": (64, 32)},
        _load_market,
        "Market-1501 person re-identification (its zip or folder)",
    ),
    "folder": Dataset(
        "folder",
        "classification",
        {
            "peers": ("resnet20", "resnet20"),
            "epochs": 30,
            "batch_size": 32,
            "optimizer": "adam",
            "lr": 1e-3,
            "image_size": (64, 64),
        },
        _SMALL,
        _load_folder,
        "your images: --data_dir with train/<class>/ and test/<class>/",
    ),
    "digits": Dataset(
        "digits",
        "classification",
        {
            # The quickstart's: scikit-learn's bundled 8x8 digits, 300 images.
            "peers": ("cnn_small", "cnn_wide"),
            "epochs": 30,
            "batch_size": 32,
            "optimizer": "adam",
            "lr": 2e-3,
            "train_size": 300,
        },
        _SMALL,
        _load_digits,
        "scikit-learn's bundled handwritten digits (no download)",
    ),
}
NAMES = tuple(REGISTRY)


def get(name):
    """The registry entry called `name`."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"--dataset must be one of {', '.join(NAMES)}. Received: {name}"
        ) from None


def data_dir_problem(config):
    """Why `config.data_dir` cannot be this dataset's, or None (checked
    before anything is written)."""
    if config.data_dir is not None and not os.path.exists(config.data_dir):
        hints = {
            "cifar100": cifar100.DOWNLOAD_HINT,
            "cifar10": cifar10.DOWNLOAD_HINT,
            "market1501": market1501.DOWNLOAD_HINT,
        }
        return f"--data_dir={config.data_dir} does not exist. " + hints.get(
            config.dataset, ""
        )
    return None
