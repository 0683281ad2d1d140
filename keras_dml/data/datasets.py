"""Every built-in dataset, registered (`keras_dml.data.registry` says what a
dataset gives).

MNIST and Fashion-MNIST are one file each, which registers itself
(`keras_dml.data.mnist`, `keras_dml.data.fashion_mnist`); the older datasets
are still declared here. Adding a dataset is a module that calls
`registry.register(...)` and one import below.
"""

import os

import numpy as np

from keras_dml import models

# fashion_mnist and mnist register themselves when imported.
from keras_dml.data import (  # noqa: F401
    cifar10,
    cifar100,
    fashion_mnist,
    folders,
    market1501,
    mnist,
    registry,
)
from keras_dml.data.normalization import NORMALIZATIONS
from keras_dml.data.registry import (
    Dataset,
    LoadedData,
    Top1,
    array_data,
    array_loader,
    get,
    register,
)
from keras_dml.reid.report import Ranking


def _load_digits(config):
    from keras_dml.data.digits import load_digits_split

    # `train_size` training images after the validation split, as for MNIST:
    # both come out of one stratified split, the rest is the test set.
    held = config.validation_size or 0
    train, test = load_digits_split(config.train_size + held)
    if config.smoke_test:
        train = tuple(a[: 2 * config.batch_size + held] for a in train)
        test = tuple(a[: config.batch_size] for a in test)
    pixels = train[0].astype(np.float32) / 255.0
    # One channel: its own statistics, as the quickstart measured them.
    mean, std = (float(pixels.mean()),), (float(pixels.std()),)
    # A 1-pixel shift, no flip: mirrored digits are other shapes.
    return array_data(
        config,
        train,
        test,
        mean,
        std,
        num_classes=10,
        augment=config.augment,
        padding=1,
        flip=False,
        validation_size=config.validation_size,
    )


def _check_digits(config):
    held = config.validation_size if isinstance(config.validation_size, int) else 0
    if not (
        isinstance(config.train_size, int)
        and config.train_size >= 10
        and config.train_size + held <= 1000
    ):
        return [
            "--train_size must be in 10..1000, with --validation_size, together "
            "(the rest of the 1,797 digits are the test set). Received: "
            f"--train_size={config.train_size}, --validation_size={held}"
        ]
    return []


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
            augment=config.augment,
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
        evaluation=Top1(validation),
        class_names=tuple(train.class_names),
    )


# ------------------------------------------------------------------- re-ID


def _check_market(config):
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


def _load_market(config):
    if config.data_dir is None:
        raise ValueError(
            f"--dataset=market1501 needs --data_dir. {market1501.DOWNLOAD_HINT}"
        )
    train = market1501.read_market1501(config.data_dir, "train")
    # Evaluation needs both: an empty one must stop the run before training.
    query, gallery = (
        market1501.read_market1501(config.data_dir, split)
        for split in ("query", "gallery")
    )
    market1501.check_queries_have_matches(query, gallery, config.data_dir)
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

    def splits(split):  # The query and the gallery, for the ranking.
        return market1501.market1501_dataset(
            config.data_dir,
            split,
            image_size=size,
            batch_size=64,
            normalization=normalization,
        )

    return LoadedData(
        num_classes=int(train.labels.max()) + 1,
        image_shape=(*size, 3),
        num_train=len(train.paths),
        preprocessing=normalization,
        train=make_train,
        validation=None,
        evaluation=Ranking(splits, metric=config.metric, flip=config.flip_test),
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
    # The paper reports the test set after training; 0 keeps that.
    "validation_size": 0,
}
_SMALL = {"epochs": 2, "batch_size": 8, "steps_per_epoch": 2}

for _dataset in (
    Dataset(
        "cifar100",
        Top1,
        _CIFAR100_DEFAULTS,
        _SMALL,
        array_loader(
            cifar100.load_cifar100,
            100,
            cifar100.MEAN,
            cifar100.STD,
            (32, 32, 3),
            padding=4,
            flip=True,
        ),
        "CIFAR-100 (the archive, its folder, or TFDS without --data_dir)",
        cifar100.DOWNLOAD_HINT,
    ),
    Dataset(
        "cifar10",
        Top1,
        _CIFAR100_DEFAULTS,
        _SMALL,
        array_loader(
            cifar10.load_cifar10,
            10,
            cifar10.MEAN,
            cifar10.STD,
            (32, 32, 3),
            padding=4,
            flip=True,
        ),
        "CIFAR-10 (the archive, its folder, or TFDS without --data_dir)",
        cifar10.DOWNLOAD_HINT,
    ),
    Dataset(
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
        {**_SMALL, "weights": "none", "image_size": (64, 32)},
        _load_market,
        "Market-1501 person re-identification (its zip or folder)",
        market1501.DOWNLOAD_HINT,
        check=_check_market,
    ),
    Dataset(
        "folder",
        Top1,
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
    Dataset(
        "digits",
        Top1,
        {
            # scikit-learn's bundled 8x8 digits, 300 training images (the
            # quickstart adds its validation split and chosen settings).
            "peers": ("cnn_small", "cnn_wide"),
            "epochs": 30,
            "batch_size": 32,
            "optimizer": "adam",
            "lr": 2e-3,
            "train_size": 300,
            "validation_size": 0,
        },
        _SMALL,
        _load_digits,
        "scikit-learn's bundled handwritten digits (no download)",
        check=_check_digits,
    ),
):
    register(_dataset)

REGISTRY = registry.REGISTRY  # In import order: MNIST's come first.
NAMES = registry.names()
__all__ = ["LoadedData", "NAMES", "REGISTRY", "data_dir_problem", "get"]


def data_dir_problem(config):
    """Why `config.data_dir` cannot be this dataset's, or None (checked
    before anything is written)."""
    if config.data_dir is not None and not os.path.exists(config.data_dir):
        hint = (
            REGISTRY[config.dataset].download_hint if config.dataset in REGISTRY else ""
        )
        return f"--data_dir={config.data_dir} does not exist. {hint}".rstrip()
    return None
