r"""The DML paper's experiments on Fashion-MNIST (or another classification
dataset), in one resumable command.

apt-get install dataset-fashion-mnist && python scripts/reproduce_paper.py \
    --output_dir=paper_fashion_mnist

Over --seeds paired seeds (the same initial weights and batches for every
variant), with --small and --large networks:
  a. independent vs DML for small+small, small+large, large+large;
  b. the small network alone, distilled from the large one pre-trained and
     frozen, and in DML with it;
  c. DML cohorts of K = 1, 2, 3, 4 small networks: mean peer and ensemble
     accuracy;
  d. posterior entropy and training loss under Gaussian weight noise, for
     the independent and DML small+small pairs.
Writes <output_dir>/report.md (every table, the regime, the time taken) and,
per part, table.md, results.json and a figure (a/<pair>/comparison.png,
c/cohort_sizes.png, d/analysis.png). Every run is an ordinary run of
scripts/train.py under <output_dir>, resumable: re-run the same command
after an interruption. The test set is only reported; curves show the
validation split held out of the training set. `--smoke_test` runs every
part on tiny data in under a minute.
Every setting below applies to every run.
"""

import _cli  # First: quiets TensorFlow's start-up before anything loads it.

_cli.quiet_tensorflow()

from absl import flags, logging  # noqa: E402

from keras_dml.training import config as settings  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "output_dir", "paper_output", "Where every run, table and figure go."
)
flags.DEFINE_integer("seeds", 3, "Paired seeds (initial weights and batches).")
flags.DEFINE_string("small", "resnet8", "The small network (keras_dml.models).")
flags.DEFINE_string("large", "resnet20", "The large network (keras_dml.models).")
flags.DEFINE_list("parts", ["a", "b", "c", "d"], "Which parts to run (a always runs).")
PER_RUN = (
    "model_dir",
    "seed",
    "independent",
    "compare_dir",
    "peers",
    "teacher",
    "teacher_peer",
)
# The regime of README's run, chosen for a 2-core CPU (about 40 minutes for
# 3 seeds) and so that the peers fit their training set, as the paper's fit
# CIFAR-100: 2,000 training images without augmentation, which both ResNets
# (78k and 270k parameters) fit in 20 epochs (the training accuracy reached
# is in report.md; with augmentation ResNet-8 reached only 88% in 20
# epochs); 1,000 more held out as the validation split.
DEFAULTS = {
    "dataset": "fashion_mnist",
    "verbose": 0,
    "export": False,
    "train_size": 2000,
    "augment": False,
    "validation_size": 1000,
    "epochs": 20,
    "batch_size": 64,
    "lr_milestones": (15,),
}


def main(argv):
    del argv  # Unused.
    if not FLAGS["verbosity"].present:
        # ERROR: dozens of cohorts in one process make TensorFlow warn of
        # retracing, which is expected here.
        logging.set_verbosity(logging.ERROR)
    from keras_dml import models
    from keras_dml.training.compare import comparison_base
    from keras_dml.training.paper import reproduce

    for name in ("small", "large"):
        if models.canonical_name(FLAGS[name].value) not in models.NAMES:
            raise ValueError(
                f"--{name}: unknown network {FLAGS[name].value!r}. Valid names: "
                f"{', '.join(models.NAMES)}"
            )
    base = comparison_base(
        FLAGS, DEFAULTS, PER_RUN, "reproduce_paper.py", FLAGS.output_dir
    )
    base = base.replace(peers=(FLAGS.small, FLAGS.large))
    if base.smoke_test:
        # The dataset's tiny sizes, not this script's regime.
        from keras_dml import datasets

        base = base.replace(**datasets.get(base.dataset).smoke_defaults)
        # One epoch: every part's code runs; a second epoch would add nothing.
        base = base.replace(train_size=None, epochs=1, lr_milestones=(1,))
    report = reproduce(
        base, FLAGS.small, FLAGS.large, FLAGS.seeds, FLAGS.output_dir, FLAGS.parts
    )
    print()
    print(report)
    print(f"Wrote {FLAGS.output_dir}/report.md and each part's table and figure.")


if __name__ == "__main__":
    settings.define_flags(FLAGS, DEFAULTS)
    own = [FLAGS[name] for name in ("output_dir", "seeds", "small", "large", "parts")]
    # What --help shows: the script's own flags first, then the settings it
    # does not set per run.
    __doc__ += "\n" + settings.help_text(DEFAULTS, own_flags=own, hidden=PER_RUN) + "\n"
    _cli.run(main)
