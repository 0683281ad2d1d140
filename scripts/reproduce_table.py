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
flags.DEFINE_string(
    "data_dir", None, "CIFAR-100 archive or folder (else TFDS, online)."
)
flags.DEFINE_string("model_dir", None, "Where every run and table.md go.")
flags.DEFINE_integer("epochs", 200, "Epochs per run.")
flags.DEFINE_integer("batch_size", 64, "Global batch size.")
flags.DEFINE_integer("seed", None, "Seed of every run.")
flags.DEFINE_bool("smoke_test", False, "Tiny data, 2 steps per epoch, 2 epochs.")
flags.DEFINE_string("strategy", "auto", "tf.distribute strategy (see train_cifar.py).")
flags.DEFINE_bool(
    "mixed_precision", False, "mixed_float16 on GPUs, mixed_bfloat16 on CPUs."
)
flags.DEFINE_integer("verbose", 2, "Keras verbosity.")
flags.mark_flag_as_required("model_dir")


def main(argv):
    del argv  # Unused.
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    # Under --smoke_test, sizes not given come from the smoke-test defaults.
    sizes = {
        name: FLAGS[name].value
        for name in ("epochs", "batch_size")
        if FLAGS[name].present or not FLAGS.smoke_test
    }
    given = {
        "dataset": "cifar100",
        "model_dir": FLAGS.model_dir,
        "data_dir": FLAGS.data_dir,
        "seed": FLAGS.seed,
        "smoke_test": FLAGS.smoke_test,
        "strategy": FLAGS.strategy,
        "mixed_precision": FLAGS.mixed_precision,
        "verbose": FLAGS.verbose,
        **sizes,
    }
    pairs = parse_pairs(FLAGS.pairs)
    # Every pair's settings are checked before the first run starts.
    base = settings.resolve({**given, "peers": pairs[0]})
    for pair in pairs[1:]:
        settings.resolve({**given, "peers": pair})
    table = reproduce_table(pairs, base, FLAGS.model_dir)
    print(table)
    print(f"\nWritten to {os.path.join(FLAGS.model_dir, 'table.md')}")


if __name__ == "__main__":
    _cli.run(main)
