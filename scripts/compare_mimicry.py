r"""Independent training vs every built-in mimicry method, in one command.

pip install -e ".[demo]" && python scripts/compare_mimicry.py

Trains two small CNN peers (cnn_small, cnn_wide) on 300 of scikit-learn's 8x8
digits (no download) independently and with each online-distillation method
of keras_dml.mimicry (DML, KDCL-MinLogit, -Naive, -Linear and -General,
temporal mean teachers, codistillation; ONE when the peers are branches of
one network, --branch_stages), from the same initial weights and
batches, over 5 seeds, and tests every peer and the ensemble on 1,397 other
images. 100 more are held out as the quickstart holds them (the validation
split each epoch is evaluated on, and KDCL-General's weights are fitted on;
without --validation_size, KDCL-General is left out). DML_e is
not run: it trains exactly as DML (same gradients; see
keras_dml/training/mimicry_comparison.py).

Prints and writes into --output_dir: table.md (mean ± std test accuracy, the
paired difference of each method from independent training, and each
method's training step time relative to it), comparison.png (test accuracy
per epoch, mean over seeds) and results.json. Each run is an ordinary run of
scripts/train.py in <output_dir>/seed<s>/<variant>/, resumable on its own:
re-run the same command after an interruption. Every setting of train.py
applies to every run (e.g. --epochs, --peers, --temperature, --dataset=folder
--data_dir=...), but those set per run or per method.
"""

import _cli  # First: quiets TensorFlow's start-up before anything loads it.

_cli.quiet_tensorflow()

from absl import flags, logging  # noqa: E402

from keras_dml.training import config as settings  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "output_dir", "compare_mimicry_output", "Where the runs, table and plot go."
)
flags.DEFINE_integer(
    "seeds", 5, "Repetitions with different initial weights and batches."
)
flags.DEFINE_list(
    "variants",
    None,
    "The variants to run, by their table labels (e.g. DML,ONE; independent "
    "training always runs). None: every one that can run.",
)
PER_RUN = ("model_dir", "seed", "independent", "compare_dir", "export")
DEFAULTS = {"dataset": "digits", "verbose": 0}


def main(argv):
    del argv  # Unused.
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from keras_dml.training.compare import comparison_base
    from keras_dml.training.mimicry_comparison import (
        PER_VARIANT,
        run_mimicry_comparison,
    )
    from keras_dml.training.quickstart import DIGITS_SPLIT, digits_defaults

    defaults = {**DEFAULTS, **digits_defaults(FLAGS.dataset, DIGITS_SPLIT)}
    base = comparison_base(
        FLAGS, defaults, PER_RUN + PER_VARIANT, "compare_mimicry.py", FLAGS.output_dir
    )
    summary = run_mimicry_comparison(
        base, FLAGS.seeds, FLAGS.output_dir, labels=FLAGS.variants
    )
    print()
    print(summary["table"])
    print(
        f"\nWrote {FLAGS.output_dir}/table.md, comparison.png and results.json in "
        f"{summary['wall_time_seconds']:.0f} s."
    )


if __name__ == "__main__":
    settings.define_flags(FLAGS, DEFAULTS)
    own = [FLAGS[name] for name in ("output_dir", "seeds", "variants")]
    # What --help shows: the script's own flags first, then the settings it
    # does not set per run.
    from keras_dml.training.mimicry_comparison import PER_VARIANT
    from keras_dml.training.quickstart import DIGITS_SPLIT

    hidden = PER_RUN + PER_VARIANT
    shown = {**DEFAULTS, **DIGITS_SPLIT}  # --help shows the digits' split.
    __doc__ += "\n" + settings.help_text(shown, own_flags=own, hidden=hidden) + "\n"
    _cli.run(main)
