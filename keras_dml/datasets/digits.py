"""scikit-learn's bundled handwritten digits (8x8, 1,797 images, no
download): the quickstart's data and `--dataset=digits`. This module is the
whole dataset: reader, loader, defaults, checks and its registry entry."""

import numpy as np

from keras_dml.datasets import registry


def load_digits_split(train_size, split_seed=0):
    """uint8 images [N, 8, 8, 1] in 0..255 and labels, split into a stratified
    training set of `train_size` images and a test set of the rest."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ImportError(
            'The digits data comes with scikit-learn: pip install -e ".[demo]"'
        ) from None

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., np.newaxis]
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        digits.target,
        train_size=train_size,
        stratify=digits.target,
        random_state=split_seed,
    )
    return (x_train, y_train), (x_test, y_test)


def _check_digits(config):
    # --train_size's own range (>= 10) is its setting's (registry.TRAIN_SIZE).
    held = config.validation_size if isinstance(config.validation_size, int) else 0
    size = config.train_size
    # None would train on all 1,797 and leave no test set.
    if size is None or (isinstance(size, int) and size >= 10 and size + held > 1000):
        return [
            "--train_size must be in 10..1000, with --validation_size, together "
            "(the rest of the 1,797 digits are the test set). Received: "
            f"--train_size={config.train_size}, --validation_size={held}"
        ]
    return []


def _load_digits(config):
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
    return registry.array_data(
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


DATASET = registry.register(
    registry.Dataset(
        "digits",
        registry.Top1,
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
        registry.SMALL,
        _load_digits,
        "scikit-learn's bundled handwritten digits (no download)",
        check=_check_digits,
        settings=(registry.TRAIN_SIZE, registry.VALIDATION_SIZE),
    )
)
