r"""The K=2 ResNet-32 DML training step: keras_dml against hand-written
PyTorch, on the same cores, in one process, interleaved.

pip install -e ".[bench]" && python benchmarks/pytorch_step.py [--repeats=7] [--steps=5]

PyTorch side (what a performance-minded PyTorch user writes): the same
ResNet-32 (option-A shortcuts: subsample + zero-pad, no parameters), two
peers, each with its own SGD (Nesterov momentum 0.9), the DML loss (CE +
KL to the other peer's detached softmax), eager mode, in four set-ups:
NCHW or `channels_last` memory format, float32 or `torch.autocast` with
bfloat16. keras_dml side: `MutualLearningModel` of two `resnet32` peers,
float32 or `mixed_bfloat16`, with TensorFlow's threads per op set by
`keras_dml.configure_cpu_threads(2)` as README's opening example and
scripts/train.py set them (`--cpu_threads=0` for TensorFlow's default),
stepped by `train_on_batch` and, as README's example trains, inside `fit`.
Batch 64, 32x32x3, 100 classes. Each figure is the median over --repeats
rounds of --steps steps, every set-up timed once per round (interleaved, so
a slow spell of this shared machine hits all); each step is synchronized
(its loss read back).

Without PyTorch installed, only keras_dml's rows are printed.
"""

import os
import statistics

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# keras_dml before Keras and TensorFlow: it loads the libraries that crash
# when loaded after TensorFlow (PyTorch's triton; keras_dml.native_libraries).
import keras_dml  # noqa: E402, I001

# isort: split
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from timing import fit_step_times, machine, warm_timer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 7, "Interleaved rounds (medians reported).")
flags.DEFINE_integer("steps", 5, "Training steps per timing.")
flags.DEFINE_integer("threads", 0, "PyTorch intra-op threads (0: the cores).")
flags.DEFINE_integer(
    "cpu_threads",
    None,
    "keras_dml: TensorFlow threads per op, as train.py's --cpu_threads (none: "
    "cores // 2 peers, what train.py does; 0: TensorFlow's default).",
)
flags.DEFINE_bool(
    "smoke",
    False,
    "Tiny settings (ResNet-8, batch 8, one round of one step): checks that "
    "the script runs, as the test suite does; the numbers mean nothing.",
)

SIZES = {"depth": 32, "batch": 64}
CLASSES = 100


# ------------------------------------------------------------------- PyTorch


def torch_cohort(torch, depth):
    """Two option-A CIFAR ResNets of `depth` in PyTorch, as in He et al.
    (2016) and keras_dml.models.ResNetCIFAR (BatchNorm momentum 0.1 in
    PyTorch's convention = 0.9 in Keras's, epsilon 1e-3)."""
    nn, functional = torch.nn, torch.nn.functional

    class Shortcut(nn.Module):
        def __init__(self, filters):
            super().__init__()
            self.filters = filters

        def forward(self, x):
            x = x[:, :, ::2, ::2]
            extra = self.filters - x.shape[1]
            return functional.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))

    class Block(nn.Module):
        def __init__(self, inputs, filters, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(inputs, filters, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(filters, eps=1e-3)
            self.conv2 = nn.Conv2d(filters, filters, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(filters, eps=1e-3)
            changes = stride != 1 or inputs != filters
            self.shortcut = Shortcut(filters) if changes else nn.Identity()

        def forward(self, x):
            y = functional.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return functional.relu(y + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            n = (depth - 2) // 6
            self.stem = nn.Sequential(
                nn.Conv2d(3, 16, 3, 1, 1, bias=False),
                nn.BatchNorm2d(16, eps=1e-3),
                nn.ReLU(),
            )
            blocks, inputs = [], 16
            for stage, filters in enumerate((16, 32, 64)):
                for block in range(n):
                    stride = 2 if stage > 0 and block == 0 else 1
                    blocks.append(Block(inputs, filters, stride))
                    inputs = filters
            self.blocks = nn.Sequential(*blocks)
            self.classifier = nn.Linear(64, CLASSES)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.classifier(x.mean((2, 3)))

    return [ResNet(), ResNet()]


def torch_stepper(torch, channels_last, bfloat16):
    """`run()` -> seconds per DML step of two PyTorch peers."""
    functional = torch.nn.functional
    torch.manual_seed(0)
    peers = torch_cohort(torch, SIZES["depth"])
    optimizers = [
        torch.optim.SGD(p.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        for p in peers
    ]
    x = torch.rand(SIZES["batch"], 3, 32, 32)
    y = torch.randint(0, CLASSES, (SIZES["batch"],))
    if channels_last:
        peers = [p.to(memory_format=torch.channels_last) for p in peers]
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            logits = [p(x) for p in peers]
        logits = [z.float() for z in logits]
        losses = []
        for k, z in enumerate(logits):
            target = functional.softmax(logits[1 - k].detach(), dim=1)
            kl = functional.kl_div(
                functional.log_softmax(z, dim=1), target, reduction="batchmean"
            )
            losses.append(functional.cross_entropy(z, y) + kl)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        # Peer k's loss reaches only peer k (the targets are detached): one
        # backward pass over the sum updates both.
        sum(losses).backward()
        for optimizer in optimizers:
            optimizer.step()
        return float(losses[0])  # Synchronize on the step's loss.

    return _timer(step)


# ------------------------------------------------------------------ keras_dml


def keras_stepper(policy, inside_fit=False):
    """keras_dml's step under `policy`: by `train_on_batch`, or (with
    `inside_fit`) as README's opening example runs it, `compile` + `fit`,
    each step timed inside `fit` from its batch's start to its loss read
    back (the first step of each `fit` call, which starts the epoch, left
    out)."""
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)
    try:
        peers = [
            keras_dml.models.ResNetCIFAR(SIZES["depth"], num_classes=CLASSES)
            for _ in range(2)
        ]
        model = keras_dml.MutualLearningModel(peers)
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x = tf.random.uniform((SIZES["batch"], 32, 32, 3))
    y = tf.random.uniform((SIZES["batch"],), maxval=CLASSES, dtype=tf.int32)

    if inside_fit:
        return _fit_timer(model, x, y)

    def step():
        return float(model.train_on_batch(x, y, return_dict=True)["loss"])

    return _timer(step)


def _fit_timer(model, x, y):
    batches = tf.data.Dataset.from_tensors((x, y)).repeat()

    def fit():
        times = fit_step_times()
        model.fit(
            batches,
            steps_per_epoch=FLAGS.steps + 1,
            epochs=1,
            verbose=0,
            callbacks=[times],
        )
        return statistics.fmean(times.seconds[1:])

    fit()  # Build, trace and warm up before timing.
    return fit


def _timer(step):
    return warm_timer(step, FLAGS.steps)


# ----------------------------------------------------------------------- main


def main(argv):
    del argv  # Unused.
    if FLAGS.smoke:
        SIZES.update(depth=8, batch=8)
        FLAGS.repeats, FLAGS.steps = 1, 1
    # What README's opening example calls first (the scripts do the same).
    tf_threads = keras_dml.configure_cpu_threads(2, FLAGS.cpu_threads)
    setups = {
        "keras_dml float32": keras_stepper("float32"),
        "keras_dml mixed_bfloat16": keras_stepper("mixed_bfloat16"),
        "keras_dml fit float32": keras_stepper("float32", inside_fit=True),
        "keras_dml fit mixed_bfloat16": keras_stepper(
            "mixed_bfloat16", inside_fit=True
        ),
    }
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(FLAGS.threads or os.cpu_count())
        for layout, channels_last in (("NCHW", False), ("channels_last", True)):
            for precision, bfloat16 in (("float32", False), ("bfloat16", True)):
                setups[f"PyTorch {layout} {precision}"] = torch_stepper(
                    torch, channels_last, bfloat16
                )
    times = {name: [] for name in setups}
    for _ in range(FLAGS.repeats):
        for name, run in setups.items():
            times[name].append(run())
    median = {name: statistics.median(t) for name, t in times.items()}

    print(f"\nMachine: {machine()}")
    print(
        f"TensorFlow: {tf_threads or 'its default'} thread(s) per op "
        f"(keras_dml.cpu_threads; --cpu_threads={FLAGS.cpu_threads})."
    )
    if torch is not None:
        print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads.")
    print(
        f"K=2 ResNet-{SIZES['depth']} DML step, batch {SIZES['batch']}, 32x32x3; "
        f"median of {FLAGS.repeats} interleaved rounds of {FLAGS.steps} steps.\n"
    )
    print(
        "| set-up | s / step | PyTorch time / keras_dml time (same precision): "
        "train_on_batch | inside fit |"
    )
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in median.items():
        ratios = ["", ""]
        if name.startswith("PyTorch"):
            ours = "mixed_bfloat16" if name.endswith("bfloat16") else "float32"
            ratios = [
                f"{seconds / median[f'keras_dml {way}{ours}']:.2f}x"
                for way in ("", "fit ")
            ]
        print(f"| {name} | {seconds:.3f} | {' | '.join(ratios)} |")
    if torch is None:
        print('\nPyTorch is not installed: pip install -e ".[bench]"')


if __name__ == "__main__":
    app.run(main)
