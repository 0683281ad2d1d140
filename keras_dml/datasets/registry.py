"""The dataset registry: each dataset a training run can use, declared once.

A dataset gives its number of classes, its input normalization, its default
settings (peers, epochs, optimizer, ...), its own checks of the settings, its
training pipeline built from (seed, epoch, input context) so that exact
resume and multi-worker slicing hold, and its evaluation: an object that
evaluates a trained cohort and writes its own report (`Top1` here for
classification; `keras_dml.reid.report.Ranking` for re-ID).
`keras_dml.training.run` does the rest the same way for all, without asking
which kind of dataset it has.

A dataset's module calls `register(Dataset(...))` when it is imported;
`keras_dml.datasets` imports every built-in one. `array_data` builds the
`LoadedData` of any dataset held as uint8 image arrays.
"""

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from keras_dml.data.arrays import array_batches
from keras_dml.data.epochs import steps_per_epoch
from keras_dml.data.options import PipelineOptions
from keras_dml.setting import Setting


@dataclasses.dataclass
class LoadedData:
    """A dataset read for one run.

    Attributes:
        num_classes: classes the peers predict.
        image_shape: `(height, width, channels)` the peers take.
        num_train: training examples.
        preprocessing: the normalization (a name, or `(mean, std)`), which
            the exported models apply to raw pixels.
        train: `PipelineOptions -> tf.data` of the training split; see
            `training_epochs`.
        validation: the split evaluated after every epoch, as `(images,
            labels)` batches, or None (re-ID evaluates by ranking instead).
        evaluation: what evaluates the trained cohort at the end and writes
            its report (`Top1`, `keras_dml.reid.report.Ranking`).
        validation_name: what `validation` is: "validation" (held out of the
            training set, for choices made while developing) or "test".
        train_batches: the training split as evaluation batches (no
            augmentation, no shuffle), where the dataset has them: what
            `keras_dml.analysis` measures the training loss on.
        test_batches: the test split as evaluation batches, likewise.
        class_names: the classes' names in label order, where they come from
            the data (image folders): a resumed run refuses other names.
        train_options: the training pipeline's batch size, normalization and
            augmentation; `training_epochs` adds the order and epochs.
    """

    num_classes: int
    image_shape: tuple
    num_train: int
    preprocessing: object
    train: Callable
    validation: object
    evaluation: object
    validation_name: str = "test"
    train_batches: object = None
    test_batches: object = None
    class_names: tuple = None
    train_options: PipelineOptions = None

    def training_epochs(self, seed, epochs, initial_epoch=0, input_context=None):
        """The training epochs `initial_epoch .. epochs-1` of a run, each a
        function of (seed, epoch) alone; with `input_context`, this
        pipeline's slice of every global batch."""
        return self.train(
            self.train_options.for_training(seed, epochs, initial_epoch, input_context)
        )

    def steps_per_epoch(self, batch_size, cap=None):
        full = steps_per_epoch(self.num_train, batch_size)
        return min(cap or full, full)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One registry entry.

    Attributes:
        name: the `--dataset` value.
        evaluation: the class of its `LoadedData.evaluation` (`Top1`, or
            `keras_dml.reid.report.Ranking`): what the experiment scripts ask
            before any run (whether there is a top-1 to compare).
        defaults: settings this dataset changes (see
            `keras_dml.training.config.SETTINGS`).
        smoke_defaults: settings of `--smoke_test` runs.
        load: `config -> LoadedData`; reads and checks the data, writes nothing.
        description: one line for `--help` and errors.
        download_hint: how to get the data, said when `--data_dir` is wrong.
        check: `config -> [problem, ...]`, the dataset's own checks of the
            settings (each problem one line naming its flag), run with every
            other check before anything is read or written.
        settings: the `keras_dml.setting.Setting`s only some datasets take
            (declared by the dataset, or shared below: `TRAIN_SIZE`,
            `VALIDATION_SIZE`, `IMAGE_SIZE`); every script gets a flag for
            each, and giving one to a dataset that does not take it is an
            error.
    """

    name: str
    evaluation: type
    defaults: dict
    smoke_defaults: dict
    load: Callable
    description: str
    download_hint: str = ""
    check: Callable = lambda config: []
    settings: tuple = ()


# ------------------------------------------------ settings some datasets take

TRAIN_SIZE = Setting(
    "train_size",
    None,
    "Training images used: for --dataset=digits a stratified split (the "
    "rest of its 1,797 images are the test set); for mnist and "
    "fashion_mnist a stratified subset of the training set (none: all).",
    "int",
    "data",
    dataset_default=True,
    bounds=dict(low=10, integer=True, optional=True),
    instead="use --steps_per_epoch to shorten epochs",
)
VALIDATION_SIZE = Setting(
    "validation_size",
    None,
    "Training images held out (stratified, the same for every run) as the "
    "split evaluated after each epoch, for every choice made while "
    "developing; the test set is then evaluated once, at the end. 0: the "
    "test set after each epoch, as the paper's tables report it.",
    "int",
    "data",
    dataset_default=True,
    bounds=dict(low=0, integer=True, optional=True),
)


def _image_size_problem(size):
    if size is not None and (len(size) != 2 or min(size) < 1):
        return (
            "--image_size must be HEIGHT,WIDTH (two positive integers). "
            f"Received: {','.join(map(str, size))}"
        )
    return None


IMAGE_SIZE = Setting(
    "image_size",
    None,
    "HEIGHT,WIDTH images are resized to (folder and market1501).",
    "int_list",
    "data",
    dataset_default=True,
    check=_image_size_problem,
)

REGISTRY = {}


def register(dataset):
    """Adds `dataset` under its name (a dataset module calls this once)."""
    if dataset.name in REGISTRY:
        raise ValueError(f"A dataset named {dataset.name!r} is already registered.")
    REGISTRY[dataset.name] = dataset
    return dataset


def settings():
    """Every setting some registered dataset declares, once each, in
    registration order."""
    found = {}
    for dataset in REGISTRY.values():
        for setting in dataset.settings:
            if found.setdefault(setting.name, setting) != setting:
                raise ValueError(
                    f"--{setting.name} is declared differently by two datasets; "
                    "declare it once and share it."
                )
    return tuple(found.values())


def settings_problems(config):
    """`--<setting> applies to ... only` for each dataset setting that
    `config` gives to a dataset that does not declare it."""
    if config.dataset not in REGISTRY:
        return []
    own = REGISTRY[config.dataset].settings
    problems = []
    for setting in settings():
        if setting in own or not setting.is_used(getattr(config, setting.name)):
            continue
        takers = [d.name for d in REGISTRY.values() if setting in d.settings]
        problem = (
            f"--{setting.name} applies to {', '.join(takers)} only (received "
            f"--dataset={config.dataset})"
        )
        problems.append(problem + (f"; {setting.instead}." if setting.instead else "."))
    return problems


def data_dir_problem(config):
    """Why `config.data_dir` cannot be this dataset's, or None (checked
    before anything is written)."""
    if config.data_dir is not None and not os.path.exists(config.data_dir):
        hint = (
            REGISTRY[config.dataset].download_hint if config.dataset in REGISTRY else ""
        )
        return f"--data_dir={config.data_dir} does not exist. {hint}".rstrip()
    return None


def names():
    """The registered datasets' names, in registration order."""
    return tuple(REGISTRY)


def get(name):
    """The registry entry called `name`."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"--dataset must be one of {', '.join(REGISTRY)}. Received: {name}"
        ) from None


# ---------------------------------------------------------- classification


class Top1:
    """A classification dataset's evaluation: the top-1 accuracy of every
    peer and the ensemble on the test split, in `results.json` (the runner
    plots the per-epoch curves for every dataset)."""

    compares_top1 = True  # The experiment scripts compare it across variants.

    def __init__(self, test):
        self.test = test

    def evaluate(self, model, verbose=0):
        logs = model.evaluate(self.test, return_dict=True, verbose=verbose)
        top1 = {
            f"peer{i}": float(logs[f"peer{i}_accuracy"])
            for i in range(len(model.peers))
        }
        top1["ensemble"] = float(logs["ensemble_accuracy"])
        return {"top1": top1}

    def report(self, directory, evaluation, title):
        """Writes nothing beyond results.json; returns what it adds there."""
        del directory, title  # Unused: the top-1 is all in results.json.
        return evaluation


def hold_out(labels, size, seed=0):
    """`(train_indices, validation_indices)`: `size` examples held out of
    `labels`, each class in proportion (stratified), the same for every run
    (`seed` is the split's own, not the run's), both sorted."""
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    by_class = order[np.argsort(labels[order], kind="stable")]
    # Evenly spaced positions through the class-sorted order: each class
    # gives its share, and which of its examples is random.
    picked = by_class[np.linspace(0, len(labels), size, endpoint=False).astype(int)]
    mask = np.zeros(len(labels), dtype=bool)
    mask[picked] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def array_data(
    config,
    train,
    test,
    mean,
    std,
    *,
    num_classes,
    augment,
    padding=4,
    flip=True,
    validation_size=0,
    train_size=None,
):
    """LoadedData over uint8 image arrays (CIFAR, digits, MNIST).

    With `validation_size` > 0, that many training images (stratified, the
    same split for every run) are held out as the split evaluated after each
    epoch, and the test set is evaluated once, at the end. With `train_size`,
    training uses a stratified subset of that many of the remaining images
    (the same for every run).
    """
    (train_images, train_labels), (test_images, test_labels) = train, test
    validation_name = "test"
    if validation_size:
        if not 0 < validation_size < len(train_labels):
            raise ValueError(
                f"--validation_size={validation_size} must be below the "
                f"{len(train_labels):,} training images."
            )
        kept, held = hold_out(train_labels, validation_size)
        held_out = (train_images[held], train_labels[held])
        train_images, train_labels = train_images[kept], train_labels[kept]
        validation_name = "validation"
    if train_size is not None and train_size < len(train_labels):
        # The split's own seed: a subset independent of the held-out one.
        _, subset = hold_out(train_labels, train_size, seed=1)
        train_images, train_labels = train_images[subset], train_labels[subset]

    def make_train(options):
        return array_batches(
            train_images, train_labels, options, padding=padding, flip=flip
        )

    options = PipelineOptions(config.batch_size, mean, std)

    def batches(images, labels):  # Unaugmented, in order.
        return array_batches(images, labels, options)

    test = batches(test_images, test_labels)
    validation = batches(*held_out) if validation_size else test
    return LoadedData(
        # The dataset's, not the largest label seen: a subset (a smoke test)
        # may miss the last classes.
        num_classes=num_classes,
        image_shape=tuple(train_images.shape[1:]),
        num_train=len(train_images),
        preprocessing=(tuple(mean), tuple(std)),
        train=make_train,
        train_options=options.replace(augment=augment),
        validation=validation,
        evaluation=Top1(test),
        validation_name=validation_name,
        train_batches=batches(train_images, train_labels),
        test_batches=test,
    )


def array_loader(load_split, num_classes, mean, std, shape, *, padding, flip):
    """`config -> LoadedData` of a dataset whose `load_split(split, data_dir)`
    gives uint8 image arrays: tiny data for a smoke test, the validation
    split and training subset the settings ask for, augmented by a shift of
    `padding` pixels (and horizontal flips with `flip`)."""

    def load(config):
        if config.smoke_test:
            train, test = smoke_arrays(config, load_split, num_classes, shape)
        else:
            train = load_split("train", config.data_dir)
            test = load_split("test", config.data_dir)
        return array_data(
            config,
            train,
            test,
            mean,
            std,
            num_classes=num_classes,
            augment=config.augment,
            padding=padding,
            flip=flip,
            validation_size=config.validation_size,
            train_size=config.train_size,
        )

    return load


# What `--smoke_test` sets: 2 steps of 8, 2 epochs (SMOKE: and a validation
# split of 8, for the datasets that hold one out by default).
SMALL = {"epochs": 2, "batch_size": 8, "steps_per_epoch": 2}
SMOKE = {**SMALL, "validation_size": 8}


def smoke_arrays(config, read, num_classes, shape):
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
