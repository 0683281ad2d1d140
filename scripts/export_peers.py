r"""Exports every peer of a saved cohort (and their ensemble) for TF Serving.

python scripts/export_peers.py --model=/tmp/dml/cohort.keras --export_dir=/tmp/models

Writes /tmp/models/<peer name>/<version>/ and /tmp/models/ensemble/<version>/,
each a SavedModel whose `serving_default` signature takes uint8 `images`
[batch, H, W, 3] and returns `probabilities`, `classes` and `logits` (re-ID
peers also have `embed`). README "Serving" shows how to serve them.
"""

import os

# TF Serving's SavedModels are TensorFlow graphs: this script exports on
# TensorFlow whatever KERAS_BACKEND says (a cohort trained on JAX or
# PyTorch loads here unchanged).
os.environ["KERAS_BACKEND"] = "tensorflow"

import _cli  # noqa: E402  First: quiets TensorFlow's start-up.

_cli.quiet_tensorflow()

from absl import flags, logging  # noqa: E402

import keras_dml  # noqa: E402,F401  (registers the cohort's classes for loading)
from keras_dml.data.normalization import NORMALIZATIONS  # noqa: E402
from keras_dml.export import (  # noqa: E402
    export_peers,
    peers_preprocessing,
    recorded_preprocessing,
)
from keras_dml.files import ensure_writable_dir, writing  # noqa: E402
from keras_dml.saving import load_keras_file  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "model", None, "A saved cohort (.keras), e.g. <model_dir>/cohort.keras."
)
flags.DEFINE_string("export_dir", None, "TF Serving model base folder to write into.")
flags.DEFINE_integer("version", 1, "Version folder to write (a positive integer).")
flags.DEFINE_enum(
    "preprocessing",
    None,
    list(NORMALIZATIONS),
    "The input normalization used in training; the served graph applies it "
    "(default: the one the run recorded in normalization.json beside --model; "
    "without that record, the peers' own, e.g. imagenet for the re-ID peers, "
    "else cifar100).",
)
flags.DEFINE_bool("include_ensemble", True, "Also export the peers' ensemble.")
flags.DEFINE_bool("overwrite", False, "Replace existing version folders.")
flags.DEFINE_bool(
    "use_averaged",
    False,
    "Export the peers' weight averages (a cohort trained with "
    "--mimicry=temporal_mean) instead of the peers.",
)
flags.mark_flags_as_required(["model", "export_dir"])


def main(argv):
    del argv  # Unused.
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TF's INFO lines drown the progress.
    model = load_keras_file(FLAGS.model, "--model")
    ensure_writable_dir(FLAGS.export_dir, "--export_dir")
    preprocessing = FLAGS.preprocessing or recorded_preprocessing(FLAGS.model)
    if preprocessing is None:
        # No run record beside the file: what the peers name, else cifar100.
        try:
            preprocessing = peers_preprocessing(model)
        except ValueError as error:
            raise ValueError(f"{error}; pass --preprocessing.") from None
        print(
            f"warning: no normalization.json beside {FLAGS.model} (a run's record); "
            f"assuming {preprocessing}. Pass --preprocessing if it was another."
        )
    print(f"preprocessing: {_shown(preprocessing)}")
    with writing(FLAGS.export_dir, "No version folder was written."):
        written = export_peers(
            model,
            FLAGS.export_dir,
            version=FLAGS.version,
            include_ensemble=FLAGS.include_ensemble,
            preprocessing=preprocessing,
            overwrite=FLAGS.overwrite,
            use_averaged=FLAGS.use_averaged,
        )
    for name, path in written.items():
        print(f"{name}: {path}")


def _shown(preprocessing):
    if isinstance(preprocessing, str):
        return preprocessing
    mean, std = preprocessing
    return f"mean {[round(m, 4) for m in mean]}, std {[round(s, 4) for s in std]}"


if __name__ == "__main__":
    _cli.run(main)
