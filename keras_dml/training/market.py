"""Market-1501 DML runs: training re-ID peers as identity classifiers, then
ranking the gallery for every query with their features."""

import dataclasses
import os
import time
import warnings

import keras
import numpy as np

from keras_dml import models
from keras_dml.data import market1501
from keras_dml.data.epochs import steps_per_epoch
from keras_dml.data.market1501 import market1501_dataset
from keras_dml.export import export_peers
from keras_dml.mutual_learning import MutualLearningModel
from keras_dml.reid import evaluate_features, extract_features
from keras_dml.training import loop, reports
from keras_dml.training.strategies import STRATEGIES

PEERS = {"mobilenet": models.reid_mobilenet, "resnet50": models.reid_resnet50}
RANKS = (1, 5, 10, 20)
RESUMABLE_CHANGES = ("model_dir", "data_dir", "epochs", "strategy", "verbose", "export")


@dataclasses.dataclass
class MarketRun:
    """Every setting of a Market-1501 run (defaults: the official DML code's)."""

    model_dir: str
    data_dir: str
    peers: tuple = ("mobilenet", "mobilenet")
    image_height: int = 256
    image_width: int = 128
    weights: str | None = "imagenet"
    dropout: float = 0.0
    epochs: int = 60
    steps_per_epoch: int | None = None
    batch_size: int = 16
    lr: float = 2e-4
    beta1: float = 0.5
    label_smoothing: float = 0.1
    kl_weight: float = 1.0
    independent: bool = False
    random_erasing: float = 0.0
    metric: str = "euclidean"
    flip_test: bool = False
    seed: int | None = None
    deterministic: bool = False
    strategy: str = "auto"
    mixed_precision: bool = False
    export: bool = True
    verbose: int = 1

    def validate(self):
        problems = []
        if len(self.peers) < 2:
            problems.append(f"--peers needs at least 2 names. Received: {self.peers}")
        unknown = [p for p in self.peers if p not in PEERS]
        if unknown:
            problems.append(
                f"--peers: unknown re-ID peer {unknown[0]!r}. Valid names: "
                f"{', '.join(PEERS)}"
            )
        for name in ("epochs", "batch_size", "image_height", "image_width"):
            if getattr(self, name) < 1:
                problems.append(
                    f"--{name} must be >= 1. Received: {getattr(self, name)}"
                )
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            problems.append(
                f"--steps_per_epoch must be >= 1. Received: {self.steps_per_epoch}"
            )
        if not self.lr > 0:
            problems.append(f"--lr must be > 0. Received: {self.lr}")
        if self.weights not in (None, "imagenet"):
            problems.append(
                f"--weights must be imagenet or none. Received: {self.weights}"
            )
        if self.strategy not in STRATEGIES:
            problems.append(
                f"--strategy must be one of {STRATEGIES}. Received: {self.strategy}"
            )
        if not os.path.exists(self.data_dir):
            problems.append(
                f"--data_dir={self.data_dir} does not exist. {market1501.DOWNLOAD_HINT}"
            )
        if problems:
            raise ValueError("\n".join(problems))

    @property
    def image_size(self):
        return (self.image_height, self.image_width)


def build_cohort(config, num_classes):
    peers = [
        PEERS[name](
            num_classes,
            input_shape=(*config.image_size, 3),
            weights=config.weights,
            dropout=config.dropout,
        )
        for name in config.peers
    ]
    model = MutualLearningModel(
        peers,
        kl_weight=0.0 if config.independent else config.kl_weight,
        label_smoothing=config.label_smoothing,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.lr, beta_1=config.beta1),
        metrics=["accuracy"],
    )
    return model


def normalization_of(peers):
    """The input scaling the peers' backbones expect (the first peer's when
    they differ: one pipeline feeds them all)."""
    kinds = [getattr(p, "preprocessing", "imagenet") for p in peers]
    if len(set(kinds)) > 1:
        warnings.warn(
            f"The peers expect different input scalings {kinds}; one pipeline "
            f"feeds them all, with {kinds[0]!r}.",
            stacklevel=2,
        )
    return kinds[0]


def evaluate_cohort(
    model,
    root,
    *,
    image_size,
    normalization,
    batch_size=64,
    metric="euclidean",
    flip=False,
    verbose=1,
):
    """Ranks Market-1501's gallery for every query with each peer's features
    and the ensemble's (concatenated), with both AP definitions.

    Returns `{name: {"rank1", "rank5", "rank10", "rank20", "mAP",
    "mAP_official", "mINP", "cmc", "num_valid_queries"}}` (fractions).
    """
    features = {}
    for split in ("query", "gallery"):
        dataset = market1501_dataset(
            root,
            split,
            image_size=image_size,
            batch_size=batch_size,
            normalization=normalization,
        )
        if verbose:
            print(f"Extracting {split} features")
        features[split] = extract_features(model, dataset, flip=flip, verbose=verbose)
    query, gallery = features["query"], features["gallery"]
    results = {}
    for name in query.features:
        common = dict(
            query_features=query.features[name],
            gallery_features=gallery.features[name],
            query_pids=query.person_ids,
            gallery_pids=gallery.person_ids,
            query_camids=query.camera_ids,
            gallery_camids=gallery.camera_ids,
            metric=metric,
        )
        ranking = evaluate_features(**common)
        results[name] = {
            **{f"rank{k}": ranking.rank(k) for k in RANKS},
            "mAP": ranking.mAP_standard,
            "mAP_official": ranking.mAP_official,
            "mINP": ranking.mINP,
            "num_valid_queries": ranking.num_valid_queries,
            "cmc": ranking.cmc.tolist(),
        }
    return results


def format_results(results):
    """A markdown table: rank-k and mAP (%) per peer and the ensemble."""
    header = "| model | " + " | ".join(f"rank-{k}" for k in RANKS)
    lines = [header + " | mAP | mAP (official) | mINP |", "| --- |" + " ---: |" * 7]
    for name, r in results.items():
        cells = [r[f"rank{k}"] for k in RANKS] + [
            r["mAP"],
            r["mAP_official"],
            r["mINP"],
        ]
        lines.append(
            f"| {name} | " + " | ".join(f"{100 * c:.2f}" for c in cells) + " |"
        )
    return "\n".join(lines)


def plot_cmc(path, results, title):
    """A PNG of the CMC curve (rank 1..max) of every peer and the ensemble."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        cmc = 100 * np.asarray(r["cmc"])
        axes.plot(
            np.arange(1, len(cmc) + 1), cmc, label=f"{name} (rank-1 {cmc[0]:.1f}%)"
        )
    axes.set_xlabel("rank")
    axes.set_ylabel("matching rate (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    reports.save_figure(figure, path)


def write_evaluation(directory, results, title):
    """`reid_results.md`, `reid_results.json` and `cmc.png` in `directory`."""
    table = format_results(results)
    reports.atomic_write_text(os.path.join(directory, "reid_results.md"), table + "\n")
    reports.write_json(os.path.join(directory, "reid_results.json"), results)
    plot_cmc(os.path.join(directory, "cmc.png"), results, title)
    return table


def run_market1501(config):
    """Trains (or resumes) a re-ID cohort, then evaluates it on query/gallery.

    Writes into `model_dir`: config.json, checkpoints/, history.csv,
    tensorboard/, cohort.keras, export/ (with `embed` signatures),
    reid_results.md / .json, cmc.png and results.json.
    """
    started = time.time()
    with loop.prepared_run(config, RESUMABLE_CHANGES) as (config, strategy, write_to):
        train = market1501.read_market1501(config.data_dir, "train")
        # Evaluation needs both: an empty one must stop the run before training.
        for split in ("query", "gallery"):
            market1501.read_market1501(config.data_dir, split)
        num_classes = int(train.labels.max()) + 1
        with strategy.scope():
            model = build_cohort(config, num_classes)
        normalization = normalization_of(model.peers)
        full_epoch = steps_per_epoch(len(train.paths), config.batch_size)
        steps = min(config.steps_per_epoch or full_epoch, full_epoch)

        def make_train(initial_epoch):
            return market1501_dataset(
                config.data_dir,
                "train",
                image_size=config.image_size,
                batch_size=config.batch_size,
                random_erasing=config.random_erasing,
                normalization=normalization,
                seed=config.seed,
                epochs=config.epochs,
                initial_epoch=initial_epoch,
            )

        history = loop.fit_with_checkpoints(
            model,
            make_train,
            epochs=config.epochs,
            steps_per_epoch=steps,
            write_to=write_to,
            restore_from=config.model_dir,
            verbose=config.verbose,
        )
        with loop.writing_outputs(write_to):
            loop.save_model(model, os.path.join(write_to, "cohort.keras"))
            if config.export:
                export_peers(
                    model,
                    os.path.join(write_to, "export"),
                    preprocessing=normalization,
                    overwrite=True,
                )
        results = evaluate_cohort(
            model,
            config.data_dir,
            image_size=config.image_size,
            normalization=normalization,
            metric=config.metric,
            flip=config.flip_test,
            verbose=config.verbose,
        )
        title = " + ".join(config.peers) + " on Market-1501"
        with loop.writing_outputs(write_to):
            table = write_evaluation(write_to, results, title)
        summary = {
            "reid": {
                k: {m: v for m, v in r.items() if m != "cmc"}
                for k, r in results.items()
            },
            "table": table,
            "peer_names": [p.name for p in model.peers],
            "run": "independent"
            if config.independent or config.kl_weight == 0
            else "DML",
            "epochs_completed": history[-1]["epoch"] if history else 0,
            "wall_time_seconds": time.time() - started,
            "flags": dataclasses.asdict(config),
            "versions": reports.versions(),
            "history": history,
        }
        with loop.writing_outputs(write_to):
            reports.write_json(os.path.join(write_to, "results.json"), summary)
        return summary
