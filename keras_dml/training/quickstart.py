"""The quickstart: DML vs independent training over seeds, by default on
scikit-learn's handwritten digits (1,797 8x8 images shipped with
scikit-learn, no download).

It is the one runner (`keras_dml.training.run`) twice per seed, through
`keras_dml.training.compare`: the same cohort trained independently
(kl_weight=0) and with DML, from the same initial weights and batches.
"""

import time

from keras_dml.training import compare

# On the digits, the quickstart holds 100 images out of the training set for
# validation (300 train, the other 1,397 are the test set): the split on
# which scripts/choose_settings.py chose its peers and schedule.
DIGITS_SPLIT = {"train_size": 300, "validation_size": 100}
# What scripts/choose_settings.py chose on that split, 2026-12-01 (README "The
# quickstart: what it measured"): among 2 cohorts x {30, 60} epochs x Adam
# {1e-3, 3e-3}, the only candidate whose independent peers fit their
# training set (>= 99% training top-1), and the best on validation.
DIGITS_DEFAULTS = {
    **DIGITS_SPLIT,
    "peers": ("cnn_wide", "cnn_wide"),
    "epochs": 60,
    "lr": 3e-3,
}


def digits_defaults(dataset, chosen):
    """`chosen` when `dataset` (the --dataset given, or None) is the digits,
    else {}: on another dataset its own defaults apply."""
    return dict(chosen) if dataset in (None, "digits") else {}


# The baseline first: the table's differences are DML - independent. Only the
# DML runs export (seed 0's).
VARIANTS = (
    ("independent", {"independent": True, "export": False}),
    ("DML", {"independent": False}),
)


def title(config):
    if config.dataset == "digits":
        return f"Digits, {config.train_size} training images"
    return config.dataset


def run_quickstart(base, seeds, output_dir, print_fn=print):
    """Runs both variants for every seed into `output_dir/seed<s>/` and writes
    `table.md`, `comparison.png` and `results.json` into `output_dir`.

    Args:
        base: the `RunConfig` of every run (`model_dir` and `seed` are set
            per run).

    Returns:
        What `output_dir/results.json` holds: "table" (markdown), "scores"
        (`{variant: [{peer name or "ensemble": top-1} per seed]}`), ...
    """
    started = time.time()
    results = compare.run_variants(base, VARIANTS, seeds, output_dir, print_fn)
    return compare.write_comparison(output_dir, results, title(base), started=started)
