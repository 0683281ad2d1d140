"""Independent training against every built-in mimicry method, paired over
seeds (`scripts/compare_mimicry.py`).

Each variant is the one runner (`keras_dml.training.run`) per seed, through
`keras_dml.training.compare`: the same cohort from the same initial weights
and batches, so each paired difference is the effect of the method alone.
The table adds each method's training step time relative to independent
training.
"""

import time

from keras_dml.training import compare
from keras_dml.training.quickstart import title

# The baseline first. DML_e is not run: with stop-gradient targets the
# gradient of a KL with respect to the student's logits, (p_k - target) / T,
# is linear in the target, so DML_e's KL to the mean of the other peers has
# the gradient of DML's mean of KLs, for any number of peers: it trains as
# DML does (tests/test_mimicry.py checks it); only its logged KL differs.
# The copies' horizons are about one epoch of the digits
# (10 steps of 32 of 300 images): temporal mean's decay 0.9 averages over ~10
# steps, codistillation refreshes every 10. Chosen by that rule, not tuned on
# the test set; PCL's 0.999 would average over more steps than the run has.
VARIANTS = (
    ("independent", {"independent": True}),
    ("DML", {"mimicry": "pairwise"}),
    ("KDCL-MinLogit", {"mimicry": "kdcl", "kdcl_variant": "min_logit"}),
    ("KDCL-Naive", {"mimicry": "kdcl", "kdcl_variant": "naive"}),
    ("KDCL-Linear", {"mimicry": "kdcl", "kdcl_variant": "linear"}),
    # Fits its weights on the validation split (held out of the training
    # set, so every variant trains on the same images); left out without one.
    ("KDCL-General", {"mimicry": "kdcl", "kdcl_variant": "general"}),
    ("temporal mean", {"mimicry": "temporal_mean", "teacher_decay": 0.9}),
    ("codistillation", {"mimicry": "codistillation", "refresh_steps": 10}),
)
# Set per variant: giving one of these to the script is an error.
PER_VARIANT = ("mimicry", "kdcl_variant", "teacher_decay", "refresh_steps")


def run_mimicry_comparison(base, seeds, output_dir, print_fn=print):
    """Runs every variant for every seed into `output_dir/seed<s>/` (no
    exports: the numbers are the point) and writes `table.md` (with the step
    time column), `comparison.png` and `results.json` into `output_dir`.

    Returns:
        What `output_dir/results.json` holds (see `compare.write_comparison`).
    """
    started = time.time()
    variants = [
        (label, {**changes, "export": False})
        for label, changes in VARIANTS
        if base.validation_size or changes.get("kdcl_variant") != "general"
    ]
    if len(variants) < len(VARIANTS):
        print_fn(
            "KDCL-General is left out: it fits its weights on images held out "
            "of the training set (--validation_size)."
        )
    results = compare.run_variants(base, variants, seeds, output_dir, print_fn)
    return compare.write_comparison(
        output_dir, results, title(base), step_times=True, started=started
    )
