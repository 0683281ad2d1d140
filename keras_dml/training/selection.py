"""Choosing a training regime on a validation split, never on the test set.

Each candidate (peers, epochs, learning rate) trains the independent
baseline (kl_weight=0) over paired seeds, with `validation_size` images held
out of the training set. A candidate is scored by its peers' mean validation
top-1 after the last epoch, and qualifies when every peer fits its training
set (training top-1 of the last epoch, on the augmented batches, at least
`fit_threshold`): the regime of the DML paper, where mutual learning acts as
a regularizer of peers that can fit their data. Tuning the baseline rather
than DML cannot favour DML.

Every run is an ordinary run of `keras_dml.training.run.run` (resumable, in
`<output_dir>/seed<s>/<candidate>/`), so it also evaluates the test set at its
end, as every run does; nothing here reads that number.
"""

import itertools
import statistics
import time

from keras_dml import files
from keras_dml.training import compare


def candidates(peers, epochs, lrs):
    """`[(label, {setting: value})]` for every combination."""
    grid = []
    for names, epoch_count, lr in itertools.product(peers, epochs, lrs):
        label = f"{'+'.join(names)} {epoch_count}ep lr{lr:g}"
        grid.append(
            (
                label,
                {
                    "peers": tuple(names),
                    "epochs": epoch_count,
                    "lr": lr,
                    "independent": True,
                    "export": False,
                },
            )
        )
    return grid


def _last(outcome, key):
    return outcome["history"][-1][key]


def score(runs):
    """`(mean validation top-1 per peer, mean training top-1 per peer)` of a
    candidate's runs (one per seed), from each run's last epoch."""
    num_peers = len(runs[0]["peer_names"])
    validation = [
        statistics.fmean(_last(r, f"val_peer{i}_accuracy") for r in runs)
        for i in range(num_peers)
    ]
    training = [
        statistics.fmean(_last(r, f"peer{i}_accuracy") for r in runs)
        for i in range(num_peers)
    ]
    return validation, training


def _validation_scores(outcome):
    """What is printed after each run: validation top-1, never the test's."""
    names = outcome["peer_names"]
    unique = len(set(names)) == len(names)
    return {
        f"{name if unique else f'{name} (peer{i})'} (validation)": _last(
            outcome, f"val_peer{i}_accuracy"
        )
        for i, name in enumerate(names)
    }


def select(base, grid, seeds, output_dir, fit_threshold=0.99, print_fn=print):
    """Trains every candidate of `grid` and chooses one.

    Args:
        base: the `RunConfig` every run starts from; its `validation_size`
            must be > 0.
        grid: `candidates(...)`.

    Returns:
        What `output_dir/selection.json` holds: "chosen" (a label), "rows"
        (label, settings, validation and training top-1 per peer, "fits")
        and "table" (markdown, also in `selection.md`).

    Raises:
        ValueError: the base has no validation split.
    """
    if not base.validation_size:
        raise ValueError(
            "Choosing settings needs a validation split held out of the training "
            "set: give --validation_size > 0."
        )
    started = time.time()
    variants = [
        compare.Variant(label, changes, scores=_validation_scores)
        for label, changes in grid
    ]
    results = compare.run_variants(base, variants, seeds, output_dir, print_fn)
    rows = []
    for label, changes in grid:
        validation, training = score(results[label])
        rows.append(
            {
                "label": label,
                "settings": {k: changes[k] for k in ("peers", "epochs", "lr")},
                "validation_top1": validation,
                "train_top1": training,
                "fits": min(training) >= fit_threshold,
            }
        )
    qualified = [row for row in rows if row["fits"]] or rows
    chosen = max(qualified, key=lambda row: statistics.fmean(row["validation_top1"]))
    table = _table(rows, chosen, seeds, fit_threshold, base)
    summary = {
        "chosen": chosen["label"],
        "rows": rows,
        "table": table,
        "any_fits": any(row["fits"] for row in rows),
        "wall_time_seconds": time.time() - started,
    }
    files.atomic_write_text(f"{output_dir}/selection.md", table + "\n")
    files.write_json(f"{output_dir}/selection.json", summary)
    return summary


def _table(rows, chosen, seeds, fit_threshold, base):
    lines = [
        "| candidate | validation top-1 per peer | mean | training top-1 per peer |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        mark = " **(chosen)**" if row is chosen else ""
        lines.append(
            f"| {row['label']}{mark} | "
            + " / ".join(f"{100 * v:.2f}" for v in row["validation_top1"])
            + f" | {100 * statistics.fmean(row['validation_top1']):.2f} | "
            + " / ".join(f"{100 * v:.2f}" for v in row["train_top1"])
            + ("" if row["fits"] else " (does not fit)")
            + " |"
        )
    lines.append("")
    lines.append(
        f"Independent peers (kl_weight 0), mean over {seeds} seed(s), last epoch; "
        f"validation: {base.validation_size} images held out of the training set. "
        f"A candidate fits when every peer's training top-1 is >= "
        f"{100 * fit_threshold:g}%; the chosen one has the best mean validation "
        "top-1 among those that fit."
        + ("" if any(r["fits"] for r in rows) else " None fits: the best overall.")
    )
    return "\n".join(lines)
