r"""Trains a cohort of mutually-learning peers on any registered dataset.

python scripts/train.py --dataset=folder --data_dir=my_images \
    --model_dir=runs/mine --seed=0

Datasets: cifar100, cifar10 (the paper's CIFAR settings), market1501 (person
re-identification, the official DML code's settings), folder (your images:
train/<class>/ and test/<class>/), digits (scikit-learn's, no download),
fashion_mnist (Debian's dataset-fashion-mnist, or keras's download) and mnist
(keras's mnist.npz), which hold a validation split out of the training set.
Every setting is a flag (`--help` lists them by group); a dataset only
changes defaults. Re-running the same command after a crash resumes after
the last completed epoch (exactly, with --seed and --deterministic).

Writes into --model_dir: config.json, checkpoints/, history.csv, tensorboard/,
cohort.keras, export/ (each peer and the ensemble for TF Serving),
results.json, and curves.png (classification) or reid_results.md / .json and
cmc.png (re-ID). `--smoke_test` runs 2 steps of 2 epochs on tiny data.
"""

import _cli  # First: quiets TensorFlow's start-up before anything loads it.

_cli.quiet_tensorflow()

import sys  # noqa: E402

from absl import flags, logging  # noqa: E402

from keras_dml.training import config as settings  # noqa: E402
from keras_dml.training.run import run  # noqa: E402

FLAGS = flags.FLAGS


def main_with(defaults):
    """Defines the flags (with the script's own `defaults`) and runs."""
    settings.define_flags(FLAGS, defaults)
    # `--help` shows the script's docstring: every setting once, by group.
    main_module = sys.modules["__main__"]
    main_module.__doc__ = f"{main_module.__doc__}\n{settings.help_text(defaults)}\n"

    def main(argv):
        del argv  # Unused.
        if not FLAGS["verbosity"].present:
            # TensorFlow's INFO lines would drown the progress.
            logging.set_verbosity(logging.WARNING)
        config = settings.resolve(settings.given_settings(FLAGS, defaults))
        results = run(config)
        print()
        if "top1" in results:
            top1 = ", ".join(
                f"{name} {100 * value:.2f}%" for name, value in results["top1"].items()
            )
            print(
                f"Final test top-1: {top1}. Results in {config.model_dir}/results.json"
            )
        else:
            print(results["table"])
            print(f"\nResults in {config.model_dir}/reid_results.json and cmc.png")

    _cli.run(main)


if __name__ == "__main__":
    main_with({})
