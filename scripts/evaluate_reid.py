r"""Evaluates saved re-ID peers on Market-1501: CMC, mAP, mINP, and a CMC plot.

python scripts/evaluate_reid.py --model=/tmp/dml_market/cohort.keras \
    --data_dir=Market-1501-v15.09.15.zip --output_dir=/tmp/dml_market/eval

--model is a saved cohort (.keras) or a comma-separated list of saved peers.
Every query ranks the gallery with each peer's features and the ensemble's
(concatenated); writes reid_results.md (the table), reid_results.json and
cmc.png (one curve per peer and the ensemble) into --output_dir.
"""

import _cli  # First: quiets TensorFlow's start-up before anything loads it.

_cli.quiet_tensorflow()

from absl import flags, logging  # noqa: E402

import keras_dml  # noqa: E402,F401  (registers the saved classes)
from keras_dml.cohort.mutual_learning import MutualLearningModel  # noqa: E402
from keras_dml.data.normalization import NORMALIZATIONS  # noqa: E402
from keras_dml.datasets.market1501 import market1501_dataset  # noqa: E402
from keras_dml.files import ensure_writable_dir, writing  # noqa: E402
from keras_dml.reid.evaluation import METRICS  # noqa: E402
from keras_dml.reid.report import (  # noqa: E402
    evaluate_cohort,
    normalization_of,
    write_evaluation,
)
from keras_dml.saving import load_keras_file  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "model", None, "A saved cohort (.keras), or saved peers (.keras, ...)."
)
flags.DEFINE_string(
    "data_dir", None, "Market-1501-v15.09.15.zip or its extracted folder."
)
flags.DEFINE_string("output_dir", None, "Where the table, JSON and plot go.")
flags.DEFINE_enum(
    "normalization",
    None,
    list(NORMALIZATIONS),
    "Input scaling (default: what the peers take, their `preprocessing`).",
)
flags.DEFINE_enum("metric", "euclidean", list(METRICS), "Feature distance.")
flags.DEFINE_bool(
    "flip_test", False, "Average each image's features with its mirror's."
)
flags.DEFINE_integer("batch_size", 64, "Images per batch.")
flags.mark_flags_as_required(["model", "data_dir", "output_dir"])


def _load(paths):
    loaded = [load_keras_file(p, "--model") for p in paths]
    if len(loaded) == 1 and isinstance(loaded[0], MutualLearningModel):
        return loaded[0], list(loaded[0].peers)
    if any(isinstance(m, MutualLearningModel) for m in loaded):
        raise ValueError("--model: give one saved cohort, or only saved peers.")
    return loaded, loaded


def main(argv):
    del argv  # Unused.
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    model, peers = _load(FLAGS.model)
    image_size = tuple(peers[0].inputs[0].shape[1:3])
    ensure_writable_dir(FLAGS.output_dir, "--output_dir")
    normalization = FLAGS.normalization or normalization_of(peers)

    def splits(split):
        return market1501_dataset(
            FLAGS.data_dir,
            split,
            image_size=image_size,
            batch_size=FLAGS.batch_size,
            normalization=normalization,
        )

    results = evaluate_cohort(model, splits, metric=FLAGS.metric, flip=FLAGS.flip_test)
    title = " + ".join(p.name for p in peers) + " on Market-1501"
    with writing(FLAGS.output_dir):
        table = write_evaluation(FLAGS.output_dir, results, title)
    print(table)
    print(
        f"\nWritten to {FLAGS.output_dir}: reid_results.md, reid_results.json, cmc.png"
    )


if __name__ == "__main__":
    _cli.run(main)
