"""The quickstart experiment: DML vs independent training on scikit-learn's
handwritten digits (1,797 8x8 images shipped with scikit-learn, no download).

Two small, different CNN peers are trained on a small training split, with
DML (kl_weight=1) and independently (kl_weight=0) from the same initial
weights and the same batches, over several seeds.
"""

import dataclasses
import os
import statistics
import time

import keras
import numpy as np

from keras_dml import files
from keras_dml.data.arrays import array_dataset
from keras_dml.data.digits import load_digits_split
from keras_dml.export import export_peers
from keras_dml.models import cnn_small, cnn_wide
from keras_dml.mutual_learning import MutualLearningModel
from keras_dml.training import reports

CONFIGURATIONS = (("independent", 0.0), ("DML", 1.0))


@dataclasses.dataclass
class QuickstartRun:
    output_dir: str = "quickstart_output"
    seeds: int = 5
    epochs: int = 30
    train_size: int = 300
    batch_size: int = 32
    learning_rate: float = 2e-3
    kl_weight: float = 1.0
    mixed_precision: bool = False
    verbose: int = 0

    def validate(self):
        for name in ("seeds", "epochs", "train_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"--{name} must be >= 1. Received: {getattr(self, name)}"
                )
        if not 10 <= self.train_size <= 1000:
            raise ValueError(
                f"--train_size must be in 10..1000 (the rest is the test set). "
                f"Received: {self.train_size}"
            )


def make_peers():
    return [cnn_small(), cnn_wide()]


def _train_one(config, kl_weight, seed, data, mean, std):
    (x_train, y_train), (x_test, y_test) = data
    keras.backend.clear_session()  # Also resets the dtype policy: set it after.
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if config.mixed_precision else "float32"
    )
    keras.utils.set_random_seed(seed)  # Same initial weights for both runs.
    model = MutualLearningModel(make_peers(), kl_weight=kl_weight)
    model.compile(keras.optimizers.Adam(config.learning_rate), metrics=["accuracy"])
    common = dict(batch_size=config.batch_size, mean=mean, std=std)
    train = array_dataset(
        x_train,
        y_train,
        augment=True,
        padding=1,
        flip=False,  # Mirrored digits are other shapes.
        shuffle=True,
        seed=seed,  # Same batches for both runs.
        **common,
    )
    test = array_dataset(x_test, y_test, **common)
    history = model.fit(
        train,
        validation_data=test,
        epochs=config.epochs,
        verbose=config.verbose,
        shuffle=False,
    ).history
    rows = [
        {"epoch": e + 1, **{k: float(v[e]) for k, v in history.items()}}
        for e in range(config.epochs)
    ]
    final = model.evaluate(test, return_dict=True, verbose=0)
    scores = {name: float(final[f"{key}_accuracy"]) for key, name in _columns(model)}
    return model, rows, scores


def _columns(model):
    return [(f"peer{i}", p.name) for i, p in enumerate(model.peers)] + [
        ("ensemble", "ensemble")
    ]


def _mean_std(values):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def _average_history(histories):
    keys = [k for k in histories[0][0] if k != "epoch"]
    return [
        {
            "epoch": rows[0]["epoch"],
            **{k: statistics.fmean(r[k] for r in rows) for k in keys},
        }
        for rows in zip(*histories)
    ]


def format_table(scores, names, seeds):
    """A markdown table of mean +- std test accuracy (%) per configuration, and
    the paired per-seed difference DML - independent."""
    header = "| configuration | " + " | ".join(names) + " |"
    lines = [header, "| --- |" + " ---: |" * len(names)]
    for label, _ in CONFIGURATIONS:
        cells = []
        for name in names:
            mean, std = _mean_std([100 * s[name] for s in scores[label]])
            cells.append(f"{mean:.2f} ± {std:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = []
    for name in names:
        differences = [
            100 * (d[name] - i[name])
            for d, i in zip(scores["DML"], scores["independent"])
        ]
        mean, std = _mean_std(differences)
        cells.append(f"{mean:+.2f} ± {std:.2f}")
    lines.append("| DML - independent | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Test accuracy (%), mean ± std over {seeds} seed(s); the difference is "
        "paired per seed (same initial weights and batches)."
    )
    return "\n".join(lines)


def run_quickstart(config, print_fn=print):
    """Runs the experiment; writes `table.md`, `quickstart.png`, `results.json`
    and `export/` (the first seed's DML peers) into `config.output_dir`.
    Returns the results dict."""
    config.validate()
    started = time.time()
    files.ensure_writable_dir(config.output_dir, "--output_dir")
    data = load_digits_split(config.train_size)
    pixels = data[0][0].astype(np.float32) / 255.0
    mean, std = (float(pixels.mean()),), (float(pixels.std()),)
    scores = {label: [] for label, _ in CONFIGURATIONS}
    histories = {label: [] for label, _ in CONFIGURATIONS}
    names = None
    for seed in range(config.seeds):
        for label, weight in CONFIGURATIONS:
            kl_weight = config.kl_weight if label == "DML" else weight
            model, rows, result = _train_one(config, kl_weight, seed, data, mean, std)
            names = list(result)
            scores[label].append(result)
            histories[label].append(rows)
            print_fn(
                f"seed {seed} {label:>11}: "
                + ", ".join(f"{n} {100 * v:.2f}%" for n, v in result.items())
            )
            if seed == 0 and label == "DML":
                with files.writing(config.output_dir):
                    export_peers(
                        model,
                        os.path.join(config.output_dir, "export"),
                        preprocessing=(mean, std),
                        overwrite=True,
                    )
    table = format_table(scores, names, config.seeds)
    with files.writing(config.output_dir):
        return _write_reports(config, table, scores, histories, names, data, started)


def _write_reports(config, table, scores, histories, names, data, started):
    reports.atomic_write_text(os.path.join(config.output_dir, "table.md"), table + "\n")
    reports.plot_curves(
        os.path.join(config.output_dir, "quickstart.png"),
        [
            ("DML", _average_history(histories["DML"]), "-"),
            ("independent", _average_history(histories["independent"]), "--"),
        ],
        f"Digits, {config.train_size} training images, mean of {config.seeds} seed(s)",
        names={f"peer{i}": name for i, name in enumerate(names[:-1])},
    )
    results = {
        "table": table,
        "scores": scores,
        "config": dataclasses.asdict(config),
        "train_images": len(data[0][0]),
        "test_images": len(data[1][0]),
        "wall_time_seconds": time.time() - started,
        "versions": reports.versions(),
    }
    reports.write_json(os.path.join(config.output_dir, "results.json"), results)
    return results
