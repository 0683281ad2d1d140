r"""Trains a cohort of mutually-learning peers on CIFAR-100 (the paper's setup).

python scripts/train_cifar.py --peers=resnet32,resnet32 \
    --data_dir=cifar-100-python.tar.gz --model_dir=/tmp/dml/resnet32_pair

Paper defaults: 200 epochs, batch 64, SGD with Nesterov momentum 0.9, lr 0.1
divided by 10 at epochs 60, 120 and 180, weight decay 5e-4, pad/crop/flip.
`--independent` trains the same cohort with kl_weight=0 (the baseline).
Re-running the same command after a crash resumes after the last completed
epoch (exactly, with --seed and --deterministic).

Writes into --model_dir: config.json, checkpoints/, history.csv, tensorboard/,
cohort.keras, export/ (each peer and the ensemble for TF Serving),
results.json (final top-1 per peer and ensemble) and curves.png.

`--smoke_test` trains 2 steps per epoch on tiny data (a slice of --data_dir,
or random images without it) and finishes in seconds.
"""

import _cli  # First: quiets TensorFlow's start-up before anything loads it.

_cli.quiet_tensorflow()

from absl import app, flags, logging  # noqa: E402

from keras_dml import models  # noqa: E402
from keras_dml.losses import MIMICRY_MODES  # noqa: E402
from keras_dml.training.cifar import UPDATE_MODES, CifarRun, run_cifar  # noqa: E402
from keras_dml.training.strategies import STRATEGIES  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "peers",
    ["resnet32", "resnet32"],
    f"Peer architectures, >= 2 of: {', '.join(models.CIFAR_NAMES)}.",
)
flags.DEFINE_string(
    "data_dir",
    None,
    "cifar-100-{binary,python}.tar.gz, the folder it extracts to, or a TFDS data "
    "dir. Without it, TFDS downloads cifar100 (needs internet).",
)
flags.DEFINE_string("model_dir", None, "Where checkpoints, logs and results go.")
flags.DEFINE_integer("epochs", 200, "Training epochs.")
flags.DEFINE_integer("batch_size", 64, "Global batch size (split across replicas).")
flags.DEFINE_float("lr", 0.1, "Initial learning rate.")
flags.DEFINE_list(
    "lr_milestones", ["60", "120", "180"], "Epochs after which lr *= lr_decay."
)
flags.DEFINE_float("lr_decay", 0.1, "Learning rate factor at each milestone.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_bool(
    "nesterov", True, "Nesterov momentum (the paper's); --nonesterov for plain."
)
flags.DEFINE_float(
    "weight_decay",
    5e-4,
    "L2 weight decay on kernels, coupled through momentum (as SGD's).",
)
flags.DEFINE_float("kl_weight", 1.0, "Weight of the mimicry (KL) term.")
flags.DEFINE_float("temperature", 1.0, "Softmax temperature of the mimicry term.")
flags.DEFINE_enum(
    "mimicry", "pairwise", list(MIMICRY_MODES), "KL to each peer or to their mean."
)
flags.DEFINE_enum("update", "simultaneous", list(UPDATE_MODES), "Peer update order.")
flags.DEFINE_bool(
    "independent", False, "Train the same cohort with kl_weight=0 (baseline)."
)
flags.DEFINE_enum("strategy", "auto", list(STRATEGIES), "tf.distribute strategy.")
flags.DEFINE_bool(
    "synchronized_batchnorm",
    False,
    "BatchNorm statistics over the global batch, not each replica's (for small "
    "per-replica batches; slower: cross-replica moments are not fused).",
)
flags.DEFINE_bool(
    "mixed_precision", False, "mixed_float16 on GPUs, mixed_bfloat16 on CPUs."
)
flags.DEFINE_integer("seed", None, "Seed for weights, data order and augmentation.")
flags.DEFINE_bool(
    "deterministic",
    False,
    "Deterministic ops (exact resume with --seed; slower on GPU).",
)
flags.DEFINE_bool("smoke_test", False, "Tiny data, 2 steps per epoch, 2 epochs.")
flags.DEFINE_bool("export", True, "Export every peer for TF Serving at the end.")
flags.DEFINE_string(
    "compare_dir",
    None,
    "Another run's model_dir to draw beside this one in curves.png.",
)
flags.DEFINE_integer(
    "verbose", 1, "Keras verbosity: 0 silent, 1 progress bar, 2 one line."
)
flags.mark_flag_as_required("model_dir")


def _config():
    epochs, batch_size = FLAGS.epochs, FLAGS.batch_size
    if FLAGS.smoke_test:
        epochs = epochs if FLAGS["epochs"].present else 2
        batch_size = batch_size if FLAGS["batch_size"].present else 8
    try:
        milestones = tuple(int(m) for m in FLAGS.lr_milestones)
    except ValueError:
        raise app.UsageError(
            "--lr_milestones must be integers. "
            f"Received: {','.join(FLAGS.lr_milestones)}"
        ) from None
    return CifarRun(
        model_dir=FLAGS.model_dir,
        peers=tuple(FLAGS.peers),
        data_dir=FLAGS.data_dir,
        epochs=epochs,
        batch_size=batch_size,
        lr=FLAGS.lr,
        lr_milestones=milestones,
        lr_decay=FLAGS.lr_decay,
        momentum=FLAGS.momentum,
        nesterov=FLAGS.nesterov,
        weight_decay=FLAGS.weight_decay,
        kl_weight=FLAGS.kl_weight,
        temperature=FLAGS.temperature,
        mimicry=FLAGS.mimicry,
        update=FLAGS.update,
        independent=FLAGS.independent,
        strategy=FLAGS.strategy,
        synchronized_batchnorm=FLAGS.synchronized_batchnorm,
        mixed_precision=FLAGS.mixed_precision,
        seed=FLAGS.seed,
        deterministic=FLAGS.deterministic,
        smoke_test=FLAGS.smoke_test,
        export=FLAGS.export,
        compare_dir=FLAGS.compare_dir,
        verbose=FLAGS.verbose,
    )


def main(argv):
    del argv  # Unused.
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TF's INFO lines drown the progress.
    config = _config()
    results = run_cifar(config)
    top1 = ", ".join(
        f"{name} {100 * value:.2f}%" for name, value in results["top1"].items()
    )
    print(f"Final test top-1: {top1}. Results in {config.model_dir}/results.json")


if __name__ == "__main__":
    _cli.run(main)
