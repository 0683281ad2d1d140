r"""Chooses peers and a schedule on a validation split, never on the test set.

pip install -e ".[demo]" && python scripts/choose_settings.py

How the quickstart's settings were chosen (README "The quickstart: what it
measured"): trains the independent baseline (kl_weight 0) of every candidate
(peers x epochs x learning rate) over 3 paired seeds on the digits (the
quickstart's 300 training images, with 100 more held out for validation;
the other 1,397 are the test set), and picks
the candidate with the best mean validation top-1 of its peers among those
whose peers fit their training set (the DML paper's regime). Tuning the
baseline, not DML, cannot favour DML.

Writes into --output_dir: selection.md (the table), selection.json, and
every run in <output_dir>/seed<s>/<candidate>/ (resumable: re-run the same
command after an interruption). Every setting of train.py applies to every
run (e.g. --dataset=fashion_mnist --validation_size=5000), but those the
grid sets. The runs evaluate the test set at their end, as every run does;
this script never reads or prints it.
"""

import _cli  # First: quiets TensorFlow's start-up before anything loads it.

_cli.quiet_tensorflow()

from absl import flags, logging  # noqa: E402

from keras_dml.training import config as settings  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "choose_settings_output", "Where the runs go.")
flags.DEFINE_integer("seeds", 3, "Paired seeds per candidate.")
flags.DEFINE_list(
    "grid_peers",
    ["cnn_small+cnn_wide", "cnn_wide+cnn_wide"],
    "Candidate cohorts, each peers joined by '+'.",
)
flags.DEFINE_list("grid_epochs", ["30", "60"], "Candidate epoch counts.")
flags.DEFINE_list("grid_lr", ["0.001", "0.003"], "Candidate learning rates.")
flags.DEFINE_float(
    "fit_threshold",
    0.99,
    "A candidate fits its training set when every peer's training top-1 of "
    "the last epoch is at least this.",
)
PER_RUN = (
    "model_dir",
    "seed",
    "independent",
    "compare_dir",
    "export",
    "peers",
    "epochs",
    "lr",
)
DEFAULTS = {"dataset": "digits", "verbose": 0}


def _grid():
    try:
        epochs = [int(value) for value in FLAGS.grid_epochs]
        lrs = [float(value) for value in FLAGS.grid_lr]
    except ValueError as error:
        raise ValueError(
            f"--grid_epochs takes integers and --grid_lr numbers ({error})."
        ) from None
    peers = [tuple(cohort.split("+")) for cohort in FLAGS.grid_peers]
    for cohort in peers:
        if len(cohort) < 2:
            raise ValueError(
                f"--grid_peers: each candidate needs 2 or more peers joined by "
                f"'+'. Received: {'+'.join(cohort)}"
            )
    if not 0 < FLAGS.fit_threshold <= 1:
        raise ValueError(
            f"--fit_threshold must be in (0, 1]. Received: {FLAGS.fit_threshold}"
        )
    return peers, epochs, lrs


def main(argv):
    del argv  # Unused.
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from keras_dml.training import quickstart, selection
    from keras_dml.training.compare import comparison_base

    grid = selection.candidates(*_grid())
    # On the digits, the quickstart's split: 300 to train, 100 held out.
    split = quickstart.digits_defaults(FLAGS.dataset, quickstart.DIGITS_SPLIT)
    base = comparison_base(
        FLAGS, {**DEFAULTS, **split}, PER_RUN, "choose_settings.py", FLAGS.output_dir
    )
    summary = selection.select(
        base, grid, FLAGS.seeds, FLAGS.output_dir, FLAGS.fit_threshold
    )
    print()
    print(summary["table"])
    print(
        f"\nChosen: {summary['chosen']}. Wrote {FLAGS.output_dir}/selection.md and "
        f"selection.json in {summary['wall_time_seconds']:.0f} s."
    )


if __name__ == "__main__":
    settings.define_flags(FLAGS, DEFAULTS)
    own = [
        FLAGS[name]
        for name in (
            "output_dir",
            "seeds",
            "grid_peers",
            "grid_epochs",
            "grid_lr",
            "fit_threshold",
        )
    ]
    __doc__ += "\n" + settings.help_text(DEFAULTS, own_flags=own, hidden=PER_RUN) + "\n"
    _cli.run(main)
