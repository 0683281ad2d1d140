"""scikit-learn's bundled handwritten digits (8x8, 1,797 images, no
download): the quickstart's data and the `digits` dataset."""

import numpy as np


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
