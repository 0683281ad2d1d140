"""The one experiment runner: a table of variants, each run over paired seeds.

For every seed, each variant (e.g. independent and DML) is one ordinary run
of `keras_dml.training.run.run` (by default in
`<output_dir>/seed<s>/<variant>/`), started from the same seed: the same
initial weights and the same batches, so the per-seed difference between two
variants is the effect of the settings that differ, not of the draw. Every
run is resumable on its own; re-running the same command after an
interruption finishes what is missing.

The quickstart (independent vs DML), the mimicry comparison (every method),
the paper's CIFAR-100 table (independent vs DML per pair) and the parts of
the paper's experiments are each a variant table given to `run_variants`.
"""

import dataclasses
import os
import statistics
import time

import keras

from keras_dml import datasets, files
from keras_dml.checks import check_number
from keras_dml.training import config as settings
from keras_dml.training import reports
from keras_dml.training.run import run

# One line style per variant in the averaged-curves plot.
LINE_STYLES = ("--", "-", ":", "-.", (0, (1, 1)), (0, (5, 1)), (0, (3, 1, 1, 1)))


def run_folder(output_dir, seed, label):
    return os.path.join(output_dir, f"seed{seed}", label.lower().replace(" ", "_"))


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of a variant table.

    Attributes:
        label: its name in tables, logs and (by default) its folder.
        changes: the settings it changes from the base: a dict, or
            `seed -> dict` where they depend on the seed (e.g. a teacher
            that an earlier variant of the same seed trains).
        folder: `seed -> its run's folder`, where runs are shared with
            another table; None: `<output_dir>/seed<s>/<label>/`.
        scores: `results -> {column: top-1}` of one run; None: each peer's
            and the ensemble's test top-1 (`named_scores`).
    """

    label: str
    changes: object = dataclasses.field(default_factory=dict)
    folder: object = None
    scores: object = None

    def settings(self, seed):
        return self.changes(seed) if callable(self.changes) else self.changes

    def run_dir(self, output_dir, seed):
        if self.folder is not None:
            return self.folder(seed)
        return run_folder(output_dir, seed, self.label)

    def scored(self, results):
        return (self.scores or named_scores)(results)


def as_variants(variants):
    """`Variant`s from `Variant`s or `(label, changes)` pairs."""
    return [v if isinstance(v, Variant) else Variant(*v) for v in variants]


def check_variants(base, variants):
    """Raises ValueError before any run when a variant's settings are invalid
    or the dataset has no top-1 to compare. Settings that depend on the seed
    are checked by each run when it starts (they may name files an earlier
    run writes)."""
    if not datasets.get(base.dataset).evaluation.compares_top1:
        raise ValueError(
            f"--dataset={base.dataset} is evaluated by ranking, not top-1: compare "
            "its runs with scripts/train.py and their reid_results.json."
        )
    variants = as_variants(variants)
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise ValueError(f"Variant labels must differ. Received: {labels}")
    for variant in variants:
        if not callable(variant.changes):
            settings.validate(base.replace(**variant.changes))


def comparison_base(flag_values, defaults, per_run, script, output_dir):
    """The `RunConfig` every run of a comparison script starts from.

    Args:
        flag_values: the script's parsed flags (every setting's, from
            `config.define_flags`).
        defaults: the script's own defaults (e.g. the digits dataset).
        per_run: settings the script sets per run; giving one is an error.
        script: the script's file name, for messages.

    Raises:
        ValueError: a per-run setting was given, a setting is invalid, or
            the digits need scikit-learn and it is missing.
    """
    chosen = [f"--{name}" for name in per_run if flag_values[name].present]
    if chosen:
        raise ValueError(
            f"{', '.join(chosen)}: set per run by {script} "
            "(use --output_dir and --seeds)."
        )
    given = settings.given_settings(flag_values, defaults)
    if given["dataset"] == "digits":
        try:
            import sklearn  # noqa: F401
        except ImportError:
            raise ValueError(
                'The digits come with scikit-learn: pip install -e ".[demo]"'
            ) from None
    return settings.resolve({**given, "model_dir": output_dir})


def run_variants(base, variants, seeds, output_dir, print_fn=print):
    """Runs every variant for every seed, the seeds in turn.

    Only the first seed's runs export their peers (when their settings say
    so): the other seeds' are the same models from other draws.

    Args:
        base: the `RunConfig` every run starts from (its `model_dir` and
            `seed` are replaced per run).
        variants: `Variant`s or `(label, {setting: value})` pairs; the first
            is the baseline the others are compared with.
        seeds: how many seeds (0, 1, ...), or the seeds themselves.
        output_dir: the parent of the runs' folders.

    Returns:
        `{label: [results of each seed]}`, each the dict `run` returns.
    """
    if isinstance(seeds, int):
        check_number("--seeds", seeds, 1, integer=True)
        seeds = range(seeds)
    seeds = list(seeds)
    variants = as_variants(variants)
    check_variants(base, variants)  # Every variant, before the first run.
    files.ensure_writable_dir(output_dir, "--output_dir")
    results = {v.label: [] for v in variants}
    for seed in seeds:
        for variant in variants:
            keras.backend.clear_session()  # Same layer names in every run.
            config = base.replace(**variant.settings(seed))
            config = config.replace(
                seed=seed,
                model_dir=variant.run_dir(output_dir, seed),
                export=config.export and seed == seeds[0],
            )
            outcome = run(config)
            results[variant.label].append(outcome)
            print_fn(
                ("" if seed is None else f"seed {seed} ")
                + f"{variant.label:>12}: "
                + ", ".join(
                    f"{name} {100 * value:.2f}%"
                    for name, value in variant.scored(outcome).items()
                )
            )
    return results


def named_scores(results):
    """`{peer name or "ensemble": top-1}` of one run's results."""
    names = results["peer_names"]
    unique = len(set(names)) == len(names)

    def column(key):
        if not key.startswith("peer"):
            return key
        name = names[int(key[4:])]
        # Two peers of one architecture: tell them apart by position.
        return name if unique else f"{name} ({key})"

    return {column(key): value for key, value in results["top1"].items()}


def _mean_std(values):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def format_table(scores, seeds, step_seconds=None):
    """A markdown table of mean ± std test accuracy (%) per variant, then the
    paired per-seed difference of each variant from the first.

    Args:
        scores: `{label: [{column: top-1 in [0, 1]} per seed]}`, the first
            label the baseline; every dict has the same columns.
        step_seconds: optional `{label: mean training step seconds}`; adds a
            column of each variant's step time relative to the baseline's.
    """
    labels = list(scores)
    baseline = labels[0]
    columns = list(scores[baseline][0])
    timed = step_seconds is not None
    header = (
        "| variant | " + " | ".join(columns) + (" | step time |" if timed else " |")
    )
    lines = [header, "| --- |" + " ---: |" * (len(columns) + timed)]

    def row(label, cells, time_cell=""):
        return (
            f"| {label} | "
            + " | ".join(cells)
            + (f" | {time_cell} |" if timed else " |")
        )

    for label in labels:
        cells = []
        for column in columns:
            mean, std = _mean_std([100 * s[column] for s in scores[label]])
            cells.append(f"{mean:.2f} ± {std:.2f}")
        relative = (
            f"{step_seconds[label] / step_seconds[baseline]:.2f}x" if timed else ""
        )
        lines.append(row(label, cells, relative))
    for label in labels[1:]:
        cells = []
        for column in columns:
            differences = [
                100 * (ours[column] - theirs[column])
                for ours, theirs in zip(scores[label], scores[baseline])
            ]
            mean, std = _mean_std(differences)
            cells.append(f"{mean:+.2f} ± {std:.2f}")
        lines.append(row(f"{label} - {baseline}", cells))
    lines.append("")
    lines.append(
        f"Test top-1 (%), mean ± std over {seeds} seed(s); each difference is "
        "paired per seed (same initial weights and batches)."
        + (
            " Step time: mean training step, relative to the first row."
            if timed
            else ""
        )
    )
    return "\n".join(lines)


def average_history(histories):
    """The per-epoch mean over seeds of every logged number."""
    keys = [k for k in histories[0][0] if k != "epoch"]
    return [
        {
            "epoch": rows[0]["epoch"],
            **{k: statistics.fmean(r[k] for r in rows if k in r) for k in keys},
        }
        for rows in zip(*histories)
    ]


def paired_differences(results, baseline):
    """`{variant: {series: [(epoch, mean over seeds of the variant's test
    top-1 minus the baseline's)]}}` for every variant but the baseline."""
    reference = [reports.accuracy_series(r["history"]) for r in results[baseline]]
    differences = {}
    for label, runs in results.items():
        if label == baseline:
            continue
        per_seed = [reports.accuracy_series(r["history"]) for r in runs]
        differences[label] = {
            name: [
                (epoch, statistics.fmean(values))
                for epoch, *values in zip(
                    [epoch for epoch, _ in points],
                    *[
                        [v - b for (_, v), (_, b) in zip(ours[name], theirs[name])]
                        for ours, theirs in zip(per_seed, reference)
                    ],
                )
            ]
            for name, points in per_seed[0].items()
        }
    return differences


def mean_step_seconds(runs):
    """Mean seconds per training step over runs (from each epoch's training
    time, without validation or checkpoints; the first epoch is left out
    when there are others: it includes tracing)."""
    per_step = []
    for outcome in runs:
        rows = outcome["history"]
        timed = rows[1:] if len(rows) > 1 else rows
        steps = outcome["steps_per_epoch"]
        per_step += [
            row["train_steps_seconds"] / steps
            for row in timed
            if "train_steps_seconds" in row
        ]
    return statistics.fmean(per_step) if per_step else float("nan")


def write_comparison(output_dir, results, title, step_times=False, started=None):
    """Writes `table.md`, `comparison.png` (test top-1 per epoch, mean over
    seeds) and `results.json` into `output_dir`, and with more than two
    variants `differences.png` (each variant's paired difference from the
    first per epoch, one panel per peer and the ensemble); returns what
    results.json holds (the table under "table", per-seed top-1 under
    "scores")."""
    scores = {
        label: [named_scores(outcome) for outcome in runs]
        for label, runs in results.items()
    }
    seeds = len(next(iter(scores.values())))
    step_seconds = (
        {label: mean_step_seconds(runs) for label, runs in results.items()}
        if step_times
        else None
    )
    table = format_table(scores, seeds, step_seconds)
    first = next(iter(results.values()))[0]
    display = {f"peer{i}": name for i, name in enumerate(first["peer_names"])}
    curves = [
        (label, average_history([r["history"] for r in runs]), style)
        for (label, runs), style in zip(results.items(), LINE_STYLES)
    ]
    with files.writing(output_dir):
        files.atomic_write_text(os.path.join(output_dir, "table.md"), table + "\n")
        reports.plot_curves(
            os.path.join(output_dir, "comparison.png"),
            curves,
            f"{title}, mean of {seeds} seed(s)",
            names=display,
        )
        if len(results) > 2:
            baseline = next(iter(results))
            reports.plot_differences(
                os.path.join(output_dir, "differences.png"),
                paired_differences(results, baseline),
                f"{title}: paired difference from {baseline}, mean of {seeds} seed(s)",
                baseline,
                names=display,
                # The split evaluated each epoch: the held-out one if any.
                split="validation" if first["flags"].get("validation_size") else "test",
            )
        summary = {
            "table": table,
            "scores": scores,
            "step_seconds": step_seconds,
            "runs": {
                label: [outcome["flags"]["model_dir"] for outcome in runs]
                for label, runs in results.items()
            },
            "config": first["flags"],
            "wall_time_seconds": None if started is None else time.time() - started,
            "versions": reports.versions(),
        }
        files.write_json(os.path.join(output_dir, "results.json"), summary)
    return summary
