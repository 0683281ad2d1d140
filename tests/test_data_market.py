"""Market-1501: file lists from a folder or the zip, the tf.data pipeline, and
the TFDS builder, on a tiny fake dataset written in the original layout."""

import os
import warnings
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from data_fixtures import MARKET, jpeg, market_name, write_market_tree, zip_tree

from keras_dml.datasets import market1501
from keras_dml.datasets.market1501 import market1501_dataset, read_market1501


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_market_tree(tmp_path_factory.mktemp("market"))


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return zip_tree(write_market_tree(tmp_path_factory.mktemp("market_zip")))


@pytest.fixture(params=["folder", "zip"])
def root(request, tree, archive):
    return tree if request.param == "folder" else archive


def test_train_split(root):
    split = read_market1501(root, "train")
    names = [os.path.basename(p) for p in split.paths]
    assert names == sorted(names) and len(names) == 6  # Thumbs.db ignored.
    assert split.person_ids.tolist() == [2, 2, 7, 7, 9, 9]
    assert split.camera_ids.tolist() == [1, 2, 1, 2, 1, 2]
    assert split.labels.tolist() == [0, 0, 1, 1, 2, 2]  # Sorted ids -> 0..n-1.


def test_gallery_drops_junk_and_keeps_distractors(root):
    paths, pids, camids, labels = read_market1501(root, "gallery")
    assert labels is None
    assert sorted(pids.tolist()) == [0, 3, 3, 5, 8]
    assert -1 not in pids and len(paths) == 5
    assert os.path.basename(paths[0]) == market_name(0, 1, 24)


def test_zip_paths_name_the_member(archive):
    split = read_market1501(archive, "query")
    assert split.paths[0] == f"{archive}/{MARKET}/query/{market_name(3, 1, 10)}"


def test_parent_folder_is_accepted(tree):
    split = read_market1501(os.path.dirname(tree), "query")
    assert split.person_ids.tolist() == [3, 5, 8]


def test_a_jpg_with_a_bad_name_is_named(tmp_path):
    root = write_market_tree(tmp_path)
    bad = os.path.join(root, "query", "0003_camera1.jpg")
    with open(bad, "wb") as f:
        f.write(jpeg(0))
    with pytest.raises(
        ValueError, match=r"0003_camera1\.jpg: not a Market-1501 image name"
    ):
        read_market1501(root, "query")
    os.remove(bad)
    with open(os.path.join(root, "query", market_name(3, 7, 1)), "wb") as f:
        f.write(jpeg(0))  # Camera 7 does not exist.
    with pytest.raises(ValueError, match="_c7s1_"):
        read_market1501(root, "query")


def test_counts_are_checked_only_for_the_full_dataset(tmp_path, tree):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_market1501(tree, "train")  # A partial copy: no warning.
    full = write_market_tree(tmp_path, full_layout=True)
    with pytest.warns(
        UserWarning, match=r"6 images of 3 ids; the full Market-1501 has 12,936"
    ):
        read_market1501(full, "train")
    with pytest.warns(UserWarning, match=r"15,913 images"):
        read_market1501(zip_tree(full), "gallery")


def test_bad_roots(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_market1501(tmp_path / "nope.zip")
    with pytest.raises(ValueError, match="is not Market-1501"):
        read_market1501(tmp_path)
    with pytest.raises(ValueError, match="`split` must be one of"):
        read_market1501(tmp_path, "test")
    bad_zip = tmp_path / f"{MARKET}.zip"
    bad_zip.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="is damaged .*Download it again"):
        read_market1501(bad_zip)


def test_zip_member_escaping_the_folder(tmp_path, tree):
    path = tmp_path / f"{MARKET}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{MARKET}/query/{market_name(3, 1, 10)}", jpeg(1))
        zf.writestr("../evil.jpg", b"x")
    with pytest.raises(ValueError, match="points outside the archive's folder"):
        read_market1501(path, "query")


def test_training_pipeline(root):
    dataset = market1501_dataset(
        root, "train", image_size=(64, 32), batch_size=4, seed=0
    )
    batches = list(dataset)
    assert len(batches) == 1  # 6 images, batch 4, remainder dropped.
    images, labels = batches[0]
    assert images.shape == (4, 64, 32, 3) and images.dtype == tf.float32
    assert labels.dtype == tf.int32 and set(labels.numpy()) <= {0, 1, 2}
    # ImageNet normalization of 0..255 pixels stays within about [-2.2, 2.7].
    assert -2.2 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 2.7


def test_evaluation_pipeline_is_ordered_and_carries_ids(root):
    batches = list(
        market1501_dataset(root, "gallery", image_size=(128, 64), batch_size=2)
    )
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    pids = np.concatenate([b[1]["person_id"] for b in batches])
    camids = np.concatenate([b[1]["camera_id"] for b in batches])
    split = read_market1501(root, "gallery")
    np.testing.assert_array_equal(pids, split.person_ids)
    np.testing.assert_array_equal(camids, split.camera_ids)
    # At the original size the decoded pixels are the JPEG's, unnormalized with "none".
    raw = list(
        market1501_dataset(
            root, "query", image_size=(128, 64), batch_size=3, normalization="none"
        )
    )[0][0].numpy()
    expected = tf.io.decode_jpeg(jpeg(10)).numpy().astype(np.float32)
    np.testing.assert_allclose(raw[0], expected, atol=1e-3)


def test_flips_follow_the_seed_and_epoch(tree):
    kwargs = dict(
        image_size=(32, 16), batch_size=6, seed=4, epochs=3, normalization="none"
    )
    full = [b[0].numpy() for b in market1501_dataset(tree, "train", **kwargs)]
    resumed = [
        b[0].numpy()
        for b in market1501_dataset(tree, "train", initial_epoch=2, **kwargs)
    ]
    np.testing.assert_array_equal(full[2], resumed[0])
    # The same order unaugmented: each image is either as stored or mirrored.
    plain = [
        b[0].numpy() for b in market1501_dataset(tree, "train", augment=False, **kwargs)
    ]
    flipped = [
        np.array_equal(a, p[:, ::-1]) and not np.array_equal(a, p)
        for batch, plain_batch in zip(full, plain)
        for a, p in zip(batch, plain_batch)
    ]
    unchanged = [
        np.array_equal(a, p)
        for batch, p_batch in zip(full, plain)
        for a, p in zip(batch, p_batch)
    ]
    assert all(f or u for f, u in zip(flipped, unchanged))
    assert 0 < sum(flipped) < len(flipped)


def test_random_erasing_fills_one_rectangle_per_image_with_the_mean(tree):
    kwargs = dict(image_size=(64, 32), batch_size=6, seed=1, epochs=1)
    plain = next(iter(market1501_dataset(tree, "train", **kwargs)))[0].numpy()
    erased = next(
        iter(market1501_dataset(tree, "train", random_erasing=1.0, **kwargs))
    )[0].numpy()
    for before, after in zip(plain, erased):
        # Outside the rectangle the image (and its flip) is unchanged; inside
        # it is the mean pixel, 0 after "imagenet" normalization.
        changed = np.any(before != after, axis=-1)
        rows, cols = np.nonzero(changed)
        assert rows.size
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        np.testing.assert_allclose(after[box], 0.0, atol=1e-6)
        np.testing.assert_array_equal(after[~changed], before[~changed])
        area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert 0.015 <= area / changed.size <= 0.45
    with pytest.raises(
        ValueError,
        match=r"`random_erasing` must be a number in \[0, 1\] \(a probability\)",
    ):
        market1501_dataset(tree, "train", random_erasing=2.0)


def test_random_erasing_follows_the_seed_and_epoch(tree):
    kwargs = dict(
        image_size=(64, 32), batch_size=6, seed=3, epochs=3, random_erasing=0.5
    )
    full = [b[0].numpy() for b in market1501_dataset(tree, "train", **kwargs)]
    resumed = [
        b[0].numpy()
        for b in market1501_dataset(tree, "train", initial_epoch=2, **kwargs)
    ]
    per_epoch = len(full) // 3
    for a, b in zip(full[2 * per_epoch :], resumed):
        np.testing.assert_array_equal(a, b)
    # Epochs differ from each other.
    assert not np.array_equal(full[0], full[per_epoch])


@pytest.mark.parametrize("damage", ["truncated", "last_byte", "not_a_jpeg", "empty"])
def test_a_corrupt_jpeg_is_named(tmp_path, damage):
    root = write_market_tree(tmp_path)
    name = market_name(5, 2, 11)
    path = os.path.join(root, "query", name)
    data = open(path, "rb").read()
    data = {
        "truncated": data[: len(data) // 2],
        "last_byte": data[:-1],
        "not_a_jpeg": b"GIF89a" + data,
        "empty": b"",
    }[damage]
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=rf"{name}: not a complete JPEG"
    ):
        list(market1501_dataset(root, "query", batch_size=3))


@pytest.mark.parametrize(
    "padding",
    [b"\x00" * 1000, bytes(range(256)) * 400],  # 100 kB of any bytes.
    ids=["zeros", "long"],
)
def test_a_jpeg_padded_after_its_end_marker_is_read(tmp_path, padding):
    root = write_market_tree(tmp_path)
    path = os.path.join(root, "query", market_name(5, 2, 11))

    def images():
        dataset = market1501_dataset(root, "query", batch_size=3)
        return np.concatenate([batch[0].numpy() for batch in dataset])

    before = images()
    with open(path, "ab") as f:
        f.write(padding)  # What some encoders write after the marker.
    np.testing.assert_array_equal(images(), before)


def test_bad_arguments(tree):
    with pytest.raises(ValueError, match="Unknown normalization 'caffe'"):
        market1501_dataset(tree, "train", normalization="caffe")


def test_tfds_builder(tmp_path, archive):
    import tensorflow_datasets as tfds

    import keras_dml.datasets.market1501_tfds  # noqa: F401  (registers the builder)

    manual = tmp_path / "manual"
    manual.mkdir()
    os.symlink(archive, manual / f"{MARKET}.zip")
    builder = tfds.builder("market1501", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
    )
    assert {name: info.num_examples for name, info in builder.info.splits.items()} == {
        "train": 6,
        "query": 3,
        "gallery": 5,
    }
    examples = list(
        tfds.as_numpy(builder.as_dataset(split="query", shuffle_files=False))
    )
    by_name = {e["file_name"].decode(): e for e in examples}
    example = by_name[market_name(3, 1, 10)]
    assert (
        example["person_id"] == 3
        and example["camera_id"] == 1
        and example["label"] == -1
    )
    np.testing.assert_array_equal(example["image"], tf.io.decode_jpeg(jpeg(10)).numpy())
    train = list(tfds.as_numpy(builder.as_dataset(split="train")))
    assert sorted(e["label"] for e in train) == [0, 0, 1, 1, 2, 2]


def test_tfds_builder_without_the_manual_download(tmp_path):
    import tensorflow_datasets as tfds

    import keras_dml.datasets.market1501_tfds  # noqa: F401

    builder = tfds.builder("market1501", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(AssertionError, match="Market-1501"):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path))
        )


def test_constants():
    assert market1501.FULL_COUNTS["train"] == (12_936, 751)
    assert market1501.NUM_TRAIN_IDS == 751


def test_queries_without_any_gallery_match_stop_the_run_before_training(tmp_path):
    # Every query's person renamed to one the gallery never shows: the run
    # would train every epoch and only then fail to evaluate.
    from data_fixtures import write_market_tree

    from keras_dml.training import config as settings
    from keras_dml.training.run import run

    root = write_market_tree(tmp_path)
    query = os.path.join(root, "query")
    for name in os.listdir(query):
        if name.endswith(".jpg"):
            os.rename(os.path.join(query, name), os.path.join(query, "1400" + name[4:]))
    config = settings.resolve(
        {
            "dataset": "market1501",
            "data_dir": root,
            "model_dir": str(tmp_path / "run"),
            "smoke_test": True,
            "weights": "none",
        }
    )
    with pytest.raises(ValueError, match="none of the .* query images has a match"):
        run(config)
    assert not (tmp_path / "run").exists()


def test_two_workers_train_on_disjoint_halves_of_each_global_batch(tree):
    """What each worker of a multi-worker Market-1501 run feeds: the dataset's
    training pipeline as the runner asks for it (`LoadedData.train` with an
    input context), with its flips and random erasing, is half of every
    global batch one process sees, epoch after epoch. (The runner's
    multi-worker training itself: tests/test_multi_worker_runner.py.)"""
    from keras_dml import datasets
    from keras_dml.training import config as settings

    config = settings.resolve(
        {
            "dataset": "market1501",
            "smoke_test": True,
            "data_dir": str(tree),
            "model_dir": "unused",
            "random_erasing": 0.5,
            "batch_size": 4,
            "image_size": (32, 16),
        }
    )
    data = datasets.get("market1501").load(config)
    one_process = [
        (x.numpy(), y.numpy())
        for x, y in data.training_epochs(7, 2, 0, input_context=None)
    ]
    workers = [
        [
            (x.numpy(), y.numpy())
            for x, y in data.training_epochs(
                7,
                2,
                0,
                input_context=tf.distribute.InputContext(
                    num_input_pipelines=2,
                    input_pipeline_id=worker,
                    num_replicas_in_sync=2,
                ),
            )
        ]
        for worker in range(2)
    ]
    assert len(one_process) >= 2 and all(len(w) == len(one_process) for w in workers)
    for step, (images, labels) in enumerate(one_process):
        halves = [workers[0][step], workers[1][step]]
        assert [len(h[1]) for h in halves] == [2, 2]
        np.testing.assert_array_equal(np.concatenate([h[1] for h in halves]), labels)
        np.testing.assert_array_equal(np.concatenate([h[0] for h in halves]), images)
