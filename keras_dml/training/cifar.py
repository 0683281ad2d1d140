"""A complete CIFAR-100 DML run: data, cohort, resumable training, reports.

`scripts/train_cifar.py` maps its flags onto `CifarRun` and calls `run_cifar`;
`scripts/reproduce_table.py` calls it once per table cell.
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_dml import models
from keras_dml.data import cifar100
from keras_dml.data.arrays import array_dataset
from keras_dml.export import export_peers
from keras_dml.losses import MIMICRY_MODES
from keras_dml.mutual_learning import MutualLearningModel
from keras_dml.training import loop, reports
from keras_dml.training.strategies import STRATEGIES

UPDATE_MODES = ("simultaneous", "sequential")
# Flags that may change when a run is resumed; every other one must match.
RESUMABLE_CHANGES = (
    "model_dir",
    "data_dir",
    "epochs",
    "strategy",
    "verbose",
    "export",
    "compare_dir",
)


@dataclasses.dataclass
class CifarRun:
    """Every setting of a CIFAR-100 run (defaults: the paper's)."""

    model_dir: str
    peers: tuple = ("resnet32", "resnet32")
    data_dir: str | None = None
    epochs: int = 200
    batch_size: int = 64
    lr: float = 0.1
    lr_milestones: tuple = (60, 120, 180)
    lr_decay: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    kl_weight: float = 1.0
    temperature: float = 1.0
    mimicry: str = "pairwise"
    update: str = "simultaneous"
    independent: bool = False
    strategy: str = "auto"
    synchronized_batchnorm: bool = False
    mixed_precision: bool = False
    seed: int | None = None
    deterministic: bool = False
    smoke_test: bool = False
    export: bool = True
    compare_dir: str | None = None
    verbose: int = 1

    def validate(self):
        """Raises ValueError naming the flag for any setting that cannot work."""
        problems = []
        if len(self.peers) < 2:
            problems.append(
                f"--peers needs at least 2 names. Received: {','.join(self.peers)}"
            )
        unknown = [p for p in self.peers if p not in models.CIFAR_NAMES]
        if unknown:
            problems.append(
                f"--peers: unknown CIFAR peer {unknown[0]!r}. "
                f"Valid names: {', '.join(models.CIFAR_NAMES)}"
            )
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(
                    f"--{name} must be >= 1. Received: {getattr(self, name)}"
                )
        for name in ("lr", "lr_decay"):
            if not getattr(self, name) > 0:
                problems.append(
                    f"--{name} must be > 0. Received: {getattr(self, name)}"
                )
        for name in ("momentum", "weight_decay", "kl_weight"):
            if getattr(self, name) < 0:
                problems.append(
                    f"--{name} must be >= 0. Received: {getattr(self, name)}"
                )
        if not self.temperature > 0:
            problems.append(f"--temperature must be > 0. Received: {self.temperature}")
        milestones = list(self.lr_milestones)
        if any(m < 1 for m in milestones) or milestones != sorted(set(milestones)):
            problems.append(
                "--lr_milestones must be increasing positive epochs. "
                f"Received: {','.join(map(str, milestones))}"
            )
        if self.mimicry not in MIMICRY_MODES:
            problems.append(
                f"--mimicry must be one of {MIMICRY_MODES}. Received: {self.mimicry}"
            )
        if self.update not in UPDATE_MODES:
            problems.append(
                f"--update must be one of {UPDATE_MODES}. Received: {self.update}"
            )
        if self.strategy not in STRATEGIES:
            problems.append(
                f"--strategy must be one of {STRATEGIES}. Received: {self.strategy}"
            )
        if self.data_dir is not None and not os.path.exists(self.data_dir):
            problems.append(
                f"--data_dir={self.data_dir} does not exist. {cifar100.DOWNLOAD_HINT}"
            )
        if self.compare_dir is not None and not os.path.isfile(
            os.path.join(self.compare_dir, "config.json")
        ):
            problems.append(
                f"--compare_dir={self.compare_dir} holds no run (no config.json)."
            )
        if problems:
            raise ValueError("\n".join(problems))


def _load_arrays(config):
    if not config.smoke_test:
        return cifar100.load_cifar100("train", config.data_dir), cifar100.load_cifar100(
            "test", config.data_dir
        )
    # Tiny data: two training batches and one test batch.
    sizes = {"train": 2 * config.batch_size, "test": config.batch_size}
    if config.data_dir is not None:
        return tuple(
            tuple(a[: sizes[s]] for a in cifar100.load_cifar100(s, config.data_dir))
            for s in ("train", "test")
        )
    rng = np.random.default_rng(config.seed)
    return tuple(
        (
            rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, cifar100.NUM_CLASSES, size=n),
        )
        for n in sizes.values()
    )


def apply_weight_decay(peer, weight_decay):
    """L2 on every kernel (convolutions, dense), coupled through momentum as in
    the CIFAR ResNet recipes: the gradient gains `weight_decay * w`, as with
    PyTorch's / Caffe's SGD `weight_decay` (hence L2 of weight_decay / 2).
    BatchNorm scales and biases are not decayed."""
    if weight_decay <= 0:
        return
    regularizer = keras.regularizers.L2(weight_decay / 2)
    for variable in peer.trainable_variables:
        if variable.path.endswith("kernel"):
            variable.regularizer = regularizer


def _optimizer(config, steps_per_epoch):
    values = [
        config.lr * config.lr_decay**i for i in range(len(config.lr_milestones) + 1)
    ]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [m * steps_per_epoch for m in config.lr_milestones], values
    )
    return keras.optimizers.SGD(
        schedule, momentum=config.momentum, nesterov=config.nesterov
    )


def build_cohort(config, steps_per_epoch):
    """The compiled MutualLearningModel of a run (call inside the strategy scope)."""
    peers = [
        models.get(
            name,
            num_classes=cifar100.NUM_CLASSES,
            synchronized_batchnorm=config.synchronized_batchnorm,
        )
        for name in config.peers
    ]
    for peer in peers:
        apply_weight_decay(peer, config.weight_decay)
    model = MutualLearningModel(
        peers,
        kl_weight=0.0 if config.independent else config.kl_weight,
        temperature=config.temperature,
        mimicry=config.mimicry,
        update=config.update,
    )
    model.compile(optimizer=_optimizer(config, steps_per_epoch), metrics=["accuracy"])
    return model


def _train_dataset(config, strategy, images, labels, initial_epoch):
    def make(input_context=None):
        return array_dataset(
            images,
            labels,
            batch_size=config.batch_size,
            mean=cifar100.MEAN,
            std=cifar100.STD,
            augment=True,
            shuffle=True,
            seed=config.seed,
            drop_remainder=True,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            input_context=input_context,
        )

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Each worker keeps its slice of every global batch.
        return strategy.distribute_datasets_from_function(make)
    return make()


def _run_label(config):
    return "independent" if config.independent or config.kl_weight == 0 else "DML"


def _write_reports(config, write_to, model, history, test_logs, started, strategy):
    names = [peer.name for peer in model.peers]
    top1 = {
        f"peer{i}": float(test_logs[f"peer{i}_accuracy"]) for i in range(len(names))
    }
    top1["ensemble"] = float(test_logs["ensemble_accuracy"])
    results = {
        "top1": top1,
        "peer_names": names,
        "run": _run_label(config),
        "epochs_completed": history[-1]["epoch"] if history else 0,
        "train_seconds": sum(row.get("epoch_seconds", 0.0) for row in history),
        "wall_time_seconds": time.time() - started,
        "flags": dataclasses.asdict(config),
        "versions": reports.versions(),
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "history": history,
    }
    reports.write_json(os.path.join(write_to, "results.json"), results)
    runs = [(_run_label(config), history, "-")]
    if config.compare_dir:
        other = os.path.join(config.compare_dir, "results.json")
        if os.path.isfile(other):
            with open(other) as f:
                compared = json.load(f)
            runs.append(
                (compared.get("run", "compared"), compared.get("history", []), "--")
            )
        else:
            print(
                f"warning: {other} does not exist (unfinished run?); "
                "curves.png leaves it out."
            )
    title = " + ".join(config.peers) + " on CIFAR-100"
    names = {f"peer{i}": f"peer{i} {name}" for i, name in enumerate(config.peers)}
    reports.plot_curves(os.path.join(write_to, "curves.png"), runs, title, names=names)
    return results


def run_cifar(config):
    """Trains (or resumes) a run and writes its artifacts into `model_dir`.

    Artifacts: `config.json`, `checkpoints/` (resume state), `history.csv`,
    `tensorboard/`, `cohort.keras`, `export/` (each peer and the ensemble as
    TF Serving SavedModels), `results.json` and `curves.png`.

    Returns the results dict (also in `results.json`).

    Raises:
        ValueError: a setting is invalid, or `model_dir` holds another run.
        TrainingDiverged: the loss became NaN (the last checkpoint is kept).
    """
    started = time.time()
    with loop.prepared_run(config, RESUMABLE_CHANGES) as (config, strategy, write_to):
        (train_images, train_labels), (test_images, test_labels) = _load_arrays(config)
        steps_per_epoch = len(train_images) // config.batch_size
        if steps_per_epoch < 1:
            raise ValueError(
                f"--batch_size={config.batch_size} is larger than the training set "
                f"({len(train_images)} images)."
            )
        with strategy.scope():
            model = build_cohort(config, steps_per_epoch)
        test = array_dataset(
            test_images,
            test_labels,
            batch_size=config.batch_size,
            mean=cifar100.MEAN,
            std=cifar100.STD,
        )
        history = loop.fit_with_checkpoints(
            model,
            lambda initial_epoch: _train_dataset(
                config, strategy, train_images, train_labels, initial_epoch
            ),
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch,
            write_to=write_to,
            restore_from=config.model_dir,  # Every worker resumes from the chief's.
            validation_data=test,
            verbose=config.verbose,
        )
        test_logs = model.evaluate(test, return_dict=True, verbose=0)
        with loop.writing_outputs(write_to):
            loop.save_model(model, os.path.join(write_to, "cohort.keras"))
            if config.export:
                export_peers(
                    model,
                    os.path.join(write_to, "export"),
                    preprocessing="cifar100",
                    overwrite=True,
                )
            return _write_reports(
                config, write_to, model, history, test_logs, started, strategy
            )
