"""The quickstart: DML vs independent training over seeds, by default on
scikit-learn's handwritten digits (1,797 8x8 images shipped with
scikit-learn, no download).

It is the one runner (`keras_dml.training.run`) twice per seed, through
`keras_dml.training.compare`: the same cohort trained independently
(kl_weight=0) and with DML, from the same initial weights and batches.
"""

import time

from keras_dml.training import compare

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
