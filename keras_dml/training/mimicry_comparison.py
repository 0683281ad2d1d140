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
    # Branch cohorts only (--branch_stages): ONE's gate reads the shared
    # trunk, OKDDip's attention the branches' features (3 branches or more).
    ("ONE", {"mimicry": "one"}),
    ("OKDDip", {"mimicry": "okddip"}),
)
LABELS = tuple(label for label, _ in VARIANTS)
# Set per variant: giving one of these to the script is an error.
PER_VARIANT = ("mimicry", "kdcl_variant", "teacher_decay", "refresh_steps")


def chosen_variants(base, labels=None):
    """`[(label, changes)]` of the variants to run: those named in `labels`
    (None: all; independent training always comes first), less those that
    cannot run on `base`: KDCL-General without a validation split, ONE and
    OKDDip without a branch cohort (`--branch_stages`), OKDDip with fewer
    than 3 branches. Returns also the lines
    saying what was left out and why."""
    unknown = [label for label in labels or () if label not in LABELS]
    if unknown:
        raise ValueError(
            f"--variants: unknown variant {unknown[0]!r}. Valid: {', '.join(LABELS)}"
        )
    notes = []
    variants = []
    for label, changes in VARIANTS:
        if labels and label not in labels and label != "independent":
            continue
        if changes.get("kdcl_variant") == "general" and not base.validation_size:
            notes.append(
                "KDCL-General is left out: it fits its weights on images held "
                "out of the training set (--validation_size)."
            )
            continue
        method = changes.get("mimicry")
        if method in ("one", "okddip") and base.branch_stages is None:
            if labels:
                notes.append(
                    f"{label} is left out: it trains branches of one network "
                    "(--branch_stages)."
                )
            continue
        if method == "okddip" and len(base.peers) < 3:
            notes.append(
                "OKDDip is left out: it needs 3 branches or more (auxiliary "
                "peers and a group leader)."
            )
            continue
        variants.append((label, {**changes, "export": False}))
    return variants, notes


def run_mimicry_comparison(base, seeds, output_dir, print_fn=print, labels=None):
    """Runs every variant (or those named in `labels`) for every seed into
    `output_dir/seed<s>/` (no exports: the numbers are the point) and writes
    `table.md` (with the step time column), `comparison.png` and
    `results.json` into `output_dir`. With `base.branch_stages` the peers
    are branches of one network, and "independent" is the branches trained
    on the shared trunk without mimicry.

    Returns:
        What `output_dir/results.json` holds (see `compare.write_comparison`).
    """
    started = time.time()
    variants, notes = chosen_variants(base, labels)
    for note in notes:
        print_fn(note)
    results = compare.run_variants(base, variants, seeds, output_dir, print_fn)
    return compare.write_comparison(
        output_dir, results, title(base), step_times=True, started=started
    )
