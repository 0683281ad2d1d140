r"""Deep Mutual Learning vs independent training on real data, in minutes.

pip install -e ".[demo]" && python scripts/quickstart.py

Trains two CNN peers (cnn_wide, 60 epochs, Adam 3e-3: chosen on a
validation split by scripts/choose_settings.py) on 300 of scikit-learn's 8x8
handwritten digits (shipped with scikit-learn: no download), with DML and
independently from the same initial weights and batches, over 5 seeds; 100
more digits are the validation split evaluated after each epoch, and the
other 1,397 are the test set, evaluated once at the end. Each run is an
ordinary run of scripts/train.py (--dataset=digits) in
<output_dir>/seed<s>/{independent,dml}/, resumable on its own: re-run the
same command after an interruption.

Prints a table of mean ± std test accuracy and the paired DML - independent
difference, and writes into --output_dir: table.md, comparison.png
(validation accuracy per epoch, mean over seeds) and results.json; seed 0's DML peers
and their ensemble are exported for TF Serving in seed0/dml/export/.
Every setting of train.py applies to every run (e.g. --epochs, --kl_weight,
--mimicry, --dataset=folder --data_dir=... for your own images), but those
set per run. The numbers are what this run measures.
"""

import os

import _cli  # First: quiets TensorFlow's start-up before anything loads it.

_cli.quiet_tensorflow()

from absl import flags, logging  # noqa: E402

from keras_dml.training import config as settings  # noqa: E402
from keras_dml.training import quickstart  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "output_dir", "quickstart_output", "Where the runs, table and plot go."
)
flags.DEFINE_integer(
    "seeds", 5, "Repetitions with different initial weights and batches."
)
PER_RUN = ("model_dir", "seed", "independent", "compare_dir")
DEFAULTS = {"dataset": "digits", "verbose": 0}
# On the digits: the split, peers and schedule scripts/choose_settings.py
# chose on validation (keras_dml/training/quickstart.py); another --dataset
# keeps its own defaults.
DIGITS = quickstart.DIGITS_DEFAULTS


def main(argv):
    del argv  # Unused.
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from keras_dml.training.compare import comparison_base

    defaults = {**DEFAULTS, **quickstart.digits_defaults(FLAGS.dataset, DIGITS)}
    base = comparison_base(FLAGS, defaults, PER_RUN, "quickstart.py", FLAGS.output_dir)
    summary = quickstart.run_quickstart(base, FLAGS.seeds, FLAGS.output_dir)
    print()
    print(summary["table"])
    print(
        f"\nWrote {FLAGS.output_dir}/table.md, comparison.png and results.json in "
        f"{summary['wall_time_seconds']:.0f} s; "
        "seed 0's DML peers for TF Serving are in "
        f"{os.path.join(FLAGS.output_dir, 'seed0', 'dml', 'export')}."
    )


if __name__ == "__main__":
    shown = {**DEFAULTS, **DIGITS}  # --help shows the digits' defaults.
    settings.define_flags(FLAGS, shown)
    own = [FLAGS[name] for name in ("output_dir", "seeds")]
    # What --help shows: the script's own flags first, then the settings it
    # does not set per run.
    __doc__ += "\n" + settings.help_text(shown, own_flags=own, hidden=PER_RUN) + "\n"
    _cli.run(main)
