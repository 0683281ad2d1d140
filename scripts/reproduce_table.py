r"""Reproduces the paper's CIFAR-100 table: Independent vs DML for each pair.

python scripts/reproduce_table.py --data_dir=cifar-100-python.tar.gz \
    --model_dir=/tmp/dml_table [--pairs=resnet32+resnet32,mobilenet_cifar+resnet32]

For every pair, trains the cohort independently (kl_weight=0) and with DML,
with the paper's settings (scripts/train_cifar.py's defaults), each run in
<model_dir>/<pair>/{independent,dml}/ and resumable on its own: re-run the
same command after an interruption. Writes <model_dir>/table.md with our
top-1 next to the paper's. The full table is 12 runs of 200 epochs: see
README "Reproducing the paper" for how long that takes.

`--smoke_test` runs every pair on tiny data in seconds per run.
"""

import os

import _cli  # First: quiets TensorFlow's start-up before anything loads it.

_cli.quiet_tensorflow()

from absl import flags, logging  # noqa: E402

from keras_dml.training import config as settings  # noqa: E402
from keras_dml.training.reproduce import PAIRS, parse_pairs, reproduce_table  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("pairs", list(PAIRS), "Peer pairs, each 'net1+net2'.")
# Every setting of train.py applies to every run of the table, but those the
# table itself sets per run.
PER_RUN = ("peers", "independent", "compare_dir", "dataset")
DEFAULTS = {"dataset": "cifar100", "verbose": 2}


def main(argv):
    del argv  # Unused.
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    given = settings.given_settings(FLAGS, DEFAULTS)
    chosen = [f"--{name}" for name in PER_RUN if FLAGS[name].present]
    if chosen:
        raise ValueError(
            f"{', '.join(chosen)}: set per run by reproduce_table.py (use --pairs)."
        )
    pairs = parse_pairs(FLAGS.pairs)
    # Every pair's settings are checked before the first run starts.
    base = settings.resolve({**given, "peers": pairs[0]})
    for pair in pairs[1:]:
        settings.resolve({**given, "peers": pair})
    table = reproduce_table(pairs, base, base.model_dir)
    print(table)
    print(f"\nWritten to {os.path.join(base.model_dir, 'table.md')}")


if __name__ == "__main__":
    settings.define_flags(FLAGS, DEFAULTS)
    __doc__ += "\n" + settings.help_text(DEFAULTS) + "\n"  # What --help shows.
    _cli.run(main)
