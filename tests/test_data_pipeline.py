"""tf.data pipelines: augmentation, normalization, per-epoch determinism and
distribution (MirroredStrategy, multi-worker sharding)."""

import numpy as np
import pytest
import tensorflow as tf
from data_fixtures import cifar_arrays, write_cifar_archive

from keras_dml.data import array_dataset, augment, steps_per_epoch
from keras_dml.datasets import cifar100
from keras_dml.datasets.cifar100 import cifar100_dataset

MEAN, STD = cifar100.MEAN, cifar100.STD


def _normalized(images):
    return (images.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)


def _collect(dataset):
    return [tuple(np.asarray(t) for t in batch) for batch in dataset]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cifar")
    splits = {"train": cifar_arrays(40, seed=3), "test": cifar_arrays(10, seed=4)}
    return write_cifar_archive(directory, "binary", splits), splits


def _reference_crop(image, row, col, padding):
    padded = np.pad(image, [(padding, padding), (padding, padding), (0, 0)])
    return padded[row : row + image.shape[0], col : col + image.shape[1]]


@pytest.mark.parametrize("where", ["eager", "dataset_map"])
def test_pad_and_crop_and_flip_match_numpy(where):
    images, _, _ = cifar_arrays(5)
    offsets = np.array([[0, 0], [8, 8], [4, 4], [0, 8], [3, 6]], np.int32)
    flips = np.array([True, False, True, False, True])

    def apply(x, o, f):
        return augment.flip_left_right(augment.pad_and_crop(x, o, 4), f)

    if where == "eager":
        result = apply(tf.constant(images), offsets, flips).numpy()
    else:
        ds = tf.data.Dataset.from_tensors((images, offsets, flips)).map(apply)
        result = next(iter(ds)).numpy()
    for i in range(5):
        expected = _reference_crop(images[i], *offsets[i], 4)
        if flips[i]:
            expected = expected[:, ::-1]
        np.testing.assert_array_equal(result[i], expected)
    # Offset (4, 4) is the identity crop.
    np.testing.assert_array_equal(result[2], images[2][:, ::-1])


def test_random_erase_draws_rectangles_as_zhong_et_al():
    height, width, n = 64, 32, 4000
    randoms = np.random.default_rng(0).uniform(size=(n, augment.ERASE_RANDOMS))
    images = tf.ones((n, height, width, 3))
    fill = np.float32([0.5, -1.0, 2.0])
    erased = augment.random_erase(images, randoms, 0.5, fill).numpy()
    again = augment.random_erase(images, randoms, 0.5, fill).numpy()
    np.testing.assert_array_equal(erased, again)  # A function of its inputs.

    mask = np.any(erased != 1.0, axis=-1)
    applied = mask.any(axis=(1, 2))
    np.testing.assert_array_equal(applied, randoms[:, 0] < 0.5)
    np.testing.assert_array_equal(erased[mask], np.broadcast_to(fill, (mask.sum(), 3)))
    fractions, aspects = [], []
    for m in mask[applied]:
        rows, cols = np.nonzero(m)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert m.sum() == h * w  # One solid rectangle.
        fractions.append(h * w / m.size)
        aspects.append(h / w)
    fractions, aspects = np.array(fractions), np.array(aspects)
    # Area 2-40% of the image (up to rounding; tall rectangles are clipped to
    # the height), aspect within [0.3, 1/0.3] and symmetric in log.
    assert fractions.min() >= 0.015 and fractions.max() <= 0.41
    assert abs(np.median(fractions) - 0.21) < 0.03
    assert aspects.min() >= 0.28 and aspects.max() <= 1 / 0.28
    # Every position of the image gets erased sometimes.
    assert mask.any(axis=0).all()


def test_test_split_is_exact_normalized_pixels_in_order(archive):
    path, splits = archive
    images, fine, _ = splits["test"]
    batches = _collect(cifar100_dataset("test", data_dir=path, batch_size=4))
    assert [len(b[0]) for b in batches] == [4, 4, 2]  # Test keeps the remainder.
    got_images = np.concatenate([b[0] for b in batches])
    got_labels = np.concatenate([b[1] for b in batches])
    assert got_images.dtype == np.float32 and got_labels.dtype == np.int32
    np.testing.assert_allclose(got_images, _normalized(images), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got_labels, fine)


def test_train_split_augments_shuffles_and_drops_remainder(archive):
    path, splits = archive
    images, fine, _ = splits["train"]
    batches = _collect(cifar100_dataset("train", data_dir=path, batch_size=16, seed=0))
    assert [b[0].shape for b in batches] == [(16, 32, 32, 3)] * 2
    labels = np.concatenate([b[1] for b in batches])
    assert not np.array_equal(labels, fine[:32])  # Shuffled.
    # Every augmented pixel is an original pixel of its image or the zero padding.
    zero = _normalized(np.zeros((1, 1, 1, 3), np.uint8))[0, 0, 0]
    allowed = _normalized(images)
    for x, y in zip(np.concatenate([b[0] for b in batches]), labels):
        candidates = allowed[fine == y]
        pixels = x.reshape(-1, 3)
        known = np.concatenate([candidates.reshape(-1, 3), zero[None]])
        distances = np.abs(pixels[:, None] - known[None]).sum(-1).min(1)
        assert distances.max() < 1e-4
    assert steps_per_epoch(40, 16) == 2 and steps_per_epoch(40, 16, False) == 3


def test_each_epoch_is_a_function_of_seed_and_epoch_alone(archive):
    path, _ = archive
    kwargs = dict(data_dir=path, batch_size=8, seed=11, epochs=3)
    tf.random.set_seed(1)
    full = _collect(cifar100_dataset("train", **kwargs))
    tf.random.set_seed(2)  # The global seed must not matter.
    resumed = _collect(cifar100_dataset("train", initial_epoch=1, **kwargs))
    per_epoch = steps_per_epoch(40, 8)
    assert len(full) == 3 * per_epoch and len(resumed) == 2 * per_epoch
    for a, b in zip(full[per_epoch:], resumed):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # Epochs differ from each other, and another seed gives another run.
    assert not np.array_equal(full[0][1], full[per_epoch][1])
    other = _collect(cifar100_dataset("train", **{**kwargs, "seed": 12}))
    assert not np.array_equal(full[0][0], other[0][0])


def test_one_epoch_per_iteration_reshuffles_each_time(archive):
    path, _ = archive
    dataset = cifar100_dataset("train", data_dir=path, batch_size=8, seed=5)
    first, second = _collect(dataset), _collect(dataset)
    assert len(first) == len(second) == 5
    assert not np.array_equal(first[0][1], second[0][1])


def test_fit_with_steps_per_epoch_over_an_epochs_dataset(archive):
    import keras

    path, _ = archive
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(100),
        ]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dataset = cifar100_dataset("train", data_dir=path, batch_size=8, seed=0, epochs=3)
    history = model.fit(
        dataset, epochs=3, steps_per_epoch=steps_per_epoch(40, 8), verbose=0
    )
    assert len(history.history["loss"]) == 3


def _replica_values(strategy, distributed_batch):
    return [
        np.asarray(t) for t in strategy.experimental_local_results(distributed_batch)
    ]


def test_mirrored_strategy_splits_the_global_batch(archive):
    path, _ = archive
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    # `epochs` fixes the order: every iteration then yields the same batches.
    dataset = cifar100_dataset("train", data_dir=path, batch_size=8, seed=3, epochs=1)
    expected = _collect(dataset.take(1))[0]
    images, labels = next(iter(strategy.experimental_distribute_dataset(dataset)))
    got_labels = _replica_values(strategy, labels)
    assert [len(v) for v in got_labels] == [4, 4]
    np.testing.assert_array_equal(np.concatenate(got_labels), expected[1])
    np.testing.assert_array_equal(
        np.concatenate(_replica_values(strategy, images)), expected[0]
    )


def test_distribute_from_function_keeps_the_global_batch(archive):
    path, _ = archive
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    kwargs = dict(data_dir=path, batch_size=8, seed=3, epochs=1)
    expected = _collect(cifar100_dataset("train", **kwargs))
    distributed = strategy.distribute_datasets_from_function(
        lambda context: cifar100_dataset("train", input_context=context, **kwargs)
    )
    iterator = iter(distributed)
    for step in range(2):
        _, labels = next(iterator)
        got = _replica_values(strategy, labels)
        assert [len(v) for v in got] == [4, 4]
        np.testing.assert_array_equal(np.concatenate(got), expected[step][1])


def test_multi_worker_shards_are_disjoint_slices_of_each_global_batch():
    images, labels, _ = cifar_arrays(48)
    common = dict(batch_size=12, mean=MEAN, std=STD, augment=True, shuffle=True, seed=9)
    expected = _collect(array_dataset(images, labels, drop_remainder=True, **common))
    # 2 workers x 2 replicas each: every worker keeps half of each global batch.
    shards = [
        _collect(
            array_dataset(
                images,
                labels,
                drop_remainder=True,
                input_context=tf.distribute.InputContext(
                    num_input_pipelines=2,
                    input_pipeline_id=worker,
                    num_replicas_in_sync=4,
                ),
                **common,
            )
        )
        for worker in range(2)
    ]
    assert len(expected) == 4 and all(len(s) == 2 * 4 for s in shards)
    for step, (global_images, global_labels) in enumerate(expected):
        replicas = (
            shards[0][2 * step : 2 * step + 2] + shards[1][2 * step : 2 * step + 2]
        )
        assert [len(r[1]) for r in replicas] == [3, 3, 3, 3]
        np.testing.assert_array_equal(
            np.concatenate([r[1] for r in replicas]), global_labels
        )
        np.testing.assert_array_equal(
            np.concatenate([r[0] for r in replicas]), global_images
        )


def test_multi_worker_needs_a_seed():
    images, labels, _ = cifar_arrays(8)
    context = tf.distribute.InputContext(2, 0, 2)
    with pytest.raises(ValueError, match="need an explicit `seed`"):
        array_dataset(
            images, labels, batch_size=4, mean=MEAN, std=STD, input_context=context
        )


def test_bad_arguments():
    images, labels, _ = cifar_arrays(8)
    common = dict(mean=MEAN, std=STD)
    with pytest.raises(
        ValueError, match=r"`images` must be uint8 of shape \[N, H, W, C\]"
    ):
        array_dataset(images.astype(np.float32), labels, batch_size=4, **common)
    with pytest.raises(ValueError, match=r"`labels` must be integers of shape \[8\]"):
        array_dataset(images, labels[:5], batch_size=4, **common)
    with pytest.raises(ValueError, match="larger than the split"):
        array_dataset(images, labels, batch_size=16, drop_remainder=True, **common)
    with pytest.raises(ValueError, match=r"initial_epoch < epochs"):
        array_dataset(images, labels, batch_size=4, epochs=2, initial_epoch=2, **common)
    with pytest.raises(ValueError, match="`seed` must be an integer"):
        array_dataset(images, labels, batch_size=4, seed="0", **common)


@pytest.mark.parametrize(
    "num_examples, drop_remainder, epochs, context",
    [
        (40, True, None, None),
        (42, False, None, None),
        (42, True, 3, None),
        (42, False, None, (2, 1, 4)),  # Worker 1's share of the partial last batch.
        (42, False, None, (2, 0, 4)),
        (36, False, 2, (1, 0, 2)),
    ],
)
def test_the_dataset_knows_its_length(num_examples, drop_remainder, epochs, context):
    images, labels, _ = cifar_arrays(num_examples)
    input_context = tf.distribute.InputContext(*context) if context else None
    dataset = array_dataset(
        images,
        labels,
        batch_size=8,
        mean=MEAN,
        std=STD,
        shuffle=True,
        seed=0,
        drop_remainder=drop_remainder,
        epochs=epochs,
        input_context=input_context,
    )
    assert int(dataset.cardinality()) == len(_collect(dataset))
