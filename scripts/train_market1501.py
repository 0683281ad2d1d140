r"""Trains re-ID peers with DML on Market-1501 and evaluates them (CMC, mAP).

python scripts/train_market1501.py --data_dir=Market-1501-v15.09.15.zip \
    --model_dir=/tmp/dml_market --peers=mobilenet,mobilenet

Defaults follow the official DML code: MobileNet v1 peers from ImageNet
weights, Adam (lr 2e-4, beta1 0.5), batch 16, label smoothing 0.1, KL weight
1; images resized to --image_height x --image_width (256 x 128). At the end,
every query ranks the gallery with each peer's pooled features and with the
ensemble's (the peers' features concatenated): rank-1/5/10/20, mAP (standard
and the official Market-1501 AP) and mINP, printed as a table and written to
reid_results.md / .json with cmc.png. Re-running the same command resumes
after the last completed epoch. `--independent` is the kl_weight=0 baseline.
"""

import _cli  # First: quiets TensorFlow's start-up before anything loads it.

_cli.quiet_tensorflow()

from absl import flags, logging  # noqa: E402

from keras_dml.reid.evaluation import METRICS  # noqa: E402
from keras_dml.training.market import PEERS, MarketRun, run_market1501  # noqa: E402
from keras_dml.training.strategies import STRATEGIES  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "peers", ["mobilenet", "mobilenet"], f"Peers, >= 2 of: {', '.join(PEERS)}."
)
flags.DEFINE_string(
    "data_dir", None, "Market-1501-v15.09.15.zip or its extracted folder."
)
flags.DEFINE_string("model_dir", None, "Where checkpoints, logs and results go.")
flags.DEFINE_integer("image_height", 256, "Input height.")
flags.DEFINE_integer("image_width", 128, "Input width.")
flags.DEFINE_enum(
    "weights", "imagenet", ["imagenet", "none"], "Backbone initialization."
)
flags.DEFINE_float("dropout", 0.0, "Dropout before each classifier.")
flags.DEFINE_integer("epochs", 60, "Training epochs.")
flags.DEFINE_integer(
    "steps_per_epoch", None, "Cap on steps per epoch (default: the whole training set)."
)
flags.DEFINE_integer("batch_size", 16, "Global batch size.")
flags.DEFINE_float("lr", 2e-4, "Adam learning rate.")
flags.DEFINE_float("beta1", 0.5, "Adam beta_1.")
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing of the identity loss.")
flags.DEFINE_float("kl_weight", 1.0, "Weight of the mimicry (KL) term.")
flags.DEFINE_bool("independent", False, "Train the same peers with kl_weight=0.")
flags.DEFINE_float("random_erasing", 0.0, "Random erasing probability in training.")
flags.DEFINE_enum("metric", "euclidean", list(METRICS), "Feature distance for ranking.")
flags.DEFINE_bool(
    "flip_test", False, "Average each test image's features with its mirror's."
)
flags.DEFINE_integer("seed", None, "Seed for weights, data order and augmentation.")
flags.DEFINE_bool(
    "deterministic", False, "Deterministic ops (exact resume with --seed)."
)
flags.DEFINE_enum("strategy", "auto", list(STRATEGIES), "tf.distribute strategy.")
flags.DEFINE_bool(
    "mixed_precision", False, "mixed_float16 on GPUs, mixed_bfloat16 on CPUs."
)
flags.DEFINE_bool("export", True, "Export every peer for TF Serving at the end.")
flags.DEFINE_integer(
    "verbose", 1, "Keras verbosity: 0 silent, 1 progress bar, 2 one line."
)
flags.mark_flags_as_required(["data_dir", "model_dir"])


def main(argv):
    del argv  # Unused.
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    config = MarketRun(
        model_dir=FLAGS.model_dir,
        data_dir=FLAGS.data_dir,
        peers=tuple(FLAGS.peers),
        image_height=FLAGS.image_height,
        image_width=FLAGS.image_width,
        weights=None if FLAGS.weights == "none" else FLAGS.weights,
        dropout=FLAGS.dropout,
        epochs=FLAGS.epochs,
        steps_per_epoch=FLAGS.steps_per_epoch,
        batch_size=FLAGS.batch_size,
        lr=FLAGS.lr,
        beta1=FLAGS.beta1,
        label_smoothing=FLAGS.label_smoothing,
        kl_weight=FLAGS.kl_weight,
        independent=FLAGS.independent,
        random_erasing=FLAGS.random_erasing,
        metric=FLAGS.metric,
        flip_test=FLAGS.flip_test,
        seed=FLAGS.seed,
        deterministic=FLAGS.deterministic,
        strategy=FLAGS.strategy,
        mixed_precision=FLAGS.mixed_precision,
        export=FLAGS.export,
        verbose=FLAGS.verbose,
    )
    results = run_market1501(config)
    print()
    print(results["table"])
    print(f"\nResults in {config.model_dir}/reid_results.json and cmc.png")


if __name__ == "__main__":
    _cli.run(main)
