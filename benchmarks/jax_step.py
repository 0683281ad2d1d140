r"""The K=2 ResNet-32 DML training step on JAX: keras_dml against the same
step written directly in JAX, in one process, interleaved; and one
convolution in XLA:CPU against TensorFlow's, to tell XLA's share from ours.

pip install -e ".[bench]" && python benchmarks/jax_step.py [--repeats=7] [--steps=5]

Hand-written JAX side (what a performance-minded JAX user writes, with no
library beyond jax): the same ResNet-32 (NHWC, option-A shortcuts:
subsample + zero-pad), two peers, BatchNorm on the batch's statistics with
its moving averages updated, the DML loss (CE + KL to the other peer's
stopped softmax), one `jax.grad` of the summed losses, SGD with Nesterov
momentum 0.9 written as Keras's SGD applies it, the whole step one
`jax.jit` with the state donated. In float32, and in bfloat16 (float32
weights cast to bfloat16 for the forward and backward passes, float32
logits and losses, as Keras's `mixed_bfloat16`). keras_dml side:
`MutualLearningModel` of two `resnet32` peers on Keras's JAX backend,
stepped by `train_on_batch` and inside `fit` (each step timed from its
batch's start to its loss read back). Plain Keras side: the same two peers
trained apart, each by its own `compile` (cross-entropy) and
`train_on_batch`, and as the two outputs of one Keras model (one program,
as the cohort's), to tell Keras's and XLA's shares from the cohort's.
Batch 64, 32x32x3, 100 classes.

The convolution rows time one 3x3 convolution of the last stage (64 -> 64
channels at 8x8, batch 64), forward and both gradients, in XLA:CPU
(`jax.jit`) and in TensorFlow (`tf.function`), each on the machine's cores.

Each figure is the median over --repeats rounds, every set-up timed once per
round (interleaved, so a slow spell of this shared machine hits all).
"""

import os

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import statistics  # noqa: E402

from absl import app, flags  # noqa: E402

# keras_dml before Keras and TensorFlow (keras_dml.native_libraries).
import keras_dml  # noqa: E402, I001

# isort: split
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from timing import fit_step_times, machine, warm_timer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 7, "Interleaved rounds (medians reported).")
flags.DEFINE_integer("steps", 5, "Training steps per timing.")
flags.DEFINE_bool(
    "smoke",
    False,
    "Tiny settings (ResNet-8, batch 8, one round of one step): checks that "
    "the script runs, as the test suite does; the numbers mean nothing.",
)

SIZES = {"depth": 32, "batch": 64}
CLASSES = 100
LR, MOMENTUM = 0.1, 0.9
BN_MOMENTUM, BN_EPSILON = 0.9, 1e-5  # keras_dml.models.common.batch_norm's.


# --------------------------------------------------------------- JAX by hand


def _he_normal(key, shape):
    fan_in = int(np.prod(shape[:-1]))
    return jax.random.normal(key, shape) * np.sqrt(2.0 / fan_in)


def init_resnet(key, depth):
    """`(params, statistics)` of an option-A CIFAR ResNet of `depth`: the
    layout of keras_dml.models.ResNetCIFAR."""
    n = (depth - 2) // 6
    keys = iter(jax.random.split(key, 6 * n + 4))

    def conv_bn(inputs, filters):
        return (
            {
                "kernel": _he_normal(next(keys), (3, 3, inputs, filters)),
                "gamma": jnp.ones(filters),
                "beta": jnp.zeros(filters),
            },
            {"mean": jnp.zeros(filters), "var": jnp.ones(filters)},
        )

    params, stats = {}, {}
    params["stem"], stats["stem"] = conv_bn(3, 16)
    blocks, inputs = [], 16
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(n):
            stride = 2 if stage > 0 and block == 0 else 1
            (p1, s1), (p2, s2) = conv_bn(inputs, filters), conv_bn(filters, filters)
            blocks.append((stride, filters, p1, s1, p2, s2))
            inputs = filters
    params["blocks"] = [(p1, p2) for _, _, p1, _, p2, _ in blocks]
    stats["blocks"] = [(s1, s2) for _, _, _, s1, _, s2 in blocks]
    params["dense"] = {
        "kernel": jax.random.normal(next(keys), (64, CLASSES)) * 0.05,
        "bias": jnp.zeros(CLASSES),
    }
    layout = tuple((stride, filters) for stride, filters, *_ in blocks)
    return params, stats, layout


def _conv(x, kernel, stride=1):
    return jax.lax.conv_general_dilated(
        x,
        kernel.astype(x.dtype),
        (stride, stride),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def _batch_norm(x, p, s):
    """Training-mode BatchNorm: the batch's statistics, and the moving
    averages' new values."""
    mean = jnp.mean(x.astype(jnp.float32), axis=(0, 1, 2))
    var = jnp.var(x.astype(jnp.float32), axis=(0, 1, 2))
    scale = p["gamma"] * jax.lax.rsqrt(var + BN_EPSILON)
    y = x * scale.astype(x.dtype) + (p["beta"] - mean * scale).astype(x.dtype)
    new = {
        "mean": BN_MOMENTUM * s["mean"] + (1 - BN_MOMENTUM) * mean,
        "var": BN_MOMENTUM * s["var"] + (1 - BN_MOMENTUM) * var,
    }
    return y, new


def resnet_logits(params, stats, layout, x):
    """`(float32 logits, new statistics)` of one peer, computing in x's dtype."""
    relu = jax.nn.relu
    y, stem = _batch_norm(
        _conv(x, params["stem"]["kernel"]), params["stem"], stats["stem"]
    )
    y = relu(y)
    new_blocks = []
    for (stride, filters), (p1, p2), (s1, s2) in zip(
        layout, params["blocks"], stats["blocks"]
    ):
        h, n1 = _batch_norm(_conv(y, p1["kernel"], stride), p1, s1)
        h, n2 = _batch_norm(_conv(relu(h), p2["kernel"]), p2, s2)
        shortcut = y
        if stride != 1 or y.shape[-1] != filters:
            shortcut = y[:, ::stride, ::stride, :]
            extra = filters - shortcut.shape[-1]
            pad = ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2))
            shortcut = jnp.pad(shortcut, pad)
        y = relu(h + shortcut)
        new_blocks.append((n1, n2))
    pooled = jnp.mean(y, axis=(1, 2)).astype(jnp.float32)
    logits = pooled @ params["dense"]["kernel"] + params["dense"]["bias"]
    return logits, {"stem": stem, "blocks": new_blocks}


def jax_stepper(bfloat16):
    """`run()` -> seconds per DML step of two hand-written JAX peers."""
    key = jax.random.PRNGKey(0)
    peers = [init_resnet(k, SIZES["depth"]) for k in jax.random.split(key, 2)]
    layout = peers[0][2]
    params = [p for p, _, _ in peers]
    stats = [s for _, s, _ in peers]
    velocity = jax.tree_util.tree_map(jnp.zeros_like, params)
    x = jax.random.uniform(jax.random.PRNGKey(1), (SIZES["batch"], 32, 32, 3))
    y = jax.random.randint(jax.random.PRNGKey(2), (SIZES["batch"],), 0, CLASSES)
    compute = jnp.bfloat16 if bfloat16 else jnp.float32

    def losses(params, stats):
        outputs = [
            resnet_logits(p, s, layout, x.astype(compute))
            for p, s in zip(params, stats)
        ]
        logits = [z for z, _ in outputs]
        total, first = 0.0, None
        for k, z in enumerate(logits):
            log_p = jax.nn.log_softmax(z)
            ce = -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1))
            target = jax.lax.stop_gradient(jax.nn.softmax(logits[1 - k]))
            kl = jnp.mean(jnp.sum(target * (jnp.log(target + 1e-12) - log_p), -1))
            total = total + ce + kl
            first = ce + kl if first is None else first
        return total, (first, [s for _, s in outputs])

    def step(params, stats, velocity):
        grads, (loss, new_stats) = jax.grad(losses, has_aux=True)(params, stats)
        # Keras's SGD with Nesterov momentum: v = m v - lr g; w += m v - lr g.
        velocity = jax.tree_util.tree_map(
            lambda v, g: MOMENTUM * v - LR * g, velocity, grads
        )
        params = jax.tree_util.tree_map(
            lambda w, v, g: w + MOMENTUM * v - LR * g, params, velocity, grads
        )
        return params, new_stats, velocity, loss

    step = jax.jit(step, donate_argnums=(0, 1, 2))
    state = [params, stats, velocity]

    def one():
        *new, loss = step(*state)
        state[:] = new
        return float(loss)  # Synchronize on the step's loss.

    return _timer(one)


# ------------------------------------------------------------------ keras_dml


def _two_peers(policy):
    """Two ResNet peers built under the dtype policy `policy` (a fresh
    Keras session; the global policy is float32 again afterwards)."""
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)
    try:
        return [
            keras_dml.models.ResNetCIFAR(SIZES["depth"], num_classes=CLASSES)
            for _ in range(2)
        ]
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _batch():
    """The one batch every Keras set-up trains on: images and labels."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(SIZES["batch"], 32, 32, 3)).astype("float32")
    y = rng.integers(0, CLASSES, SIZES["batch"]).astype("int32")
    return x, y


def keras_stepper(policy, inside_fit=False):
    """keras_dml's step on Keras's JAX backend under `policy`: by
    `train_on_batch`, or inside `fit` (each step timed from its batch's
    start to its loss read back; the first step of each `fit` call left
    out)."""
    model = keras_dml.MutualLearningModel(_two_peers(policy))
    model.compile(keras.optimizers.SGD(LR, momentum=MOMENTUM, nesterov=True))
    x, y = _batch()
    if inside_fit:
        return _fit_timer(model, x, y)

    def step():
        return float(model.train_on_batch(x, y, return_dict=True)["loss"])

    return _timer(step)


def plain_keras_stepper(policy, one_model=False):
    """The two peers trained by plain Keras (`compile` with cross-entropy,
    `train_on_batch`) without the cohort: apart, one after the other (what
    Keras's own layers, optimizer and train step cost on JAX), or with
    `one_model` as the two outputs of one functional model (one program
    for both peers, as the cohort's step, with one optimizer)."""
    peers = _two_peers(policy)
    x, y = _batch()

    def cross_entropy():
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    if one_model:
        images = keras.Input((32, 32, 3))
        pair = keras.Model(images, [peer(images) for peer in peers])
        pair.compile(
            keras.optimizers.SGD(LR, momentum=MOMENTUM, nesterov=True),
            [cross_entropy(), cross_entropy()],
        )
        return _timer(lambda: float(pair.train_on_batch(x, [y, y])[0]))
    for peer in peers:
        peer.compile(
            keras.optimizers.SGD(LR, momentum=MOMENTUM, nesterov=True),
            cross_entropy(),
        )

    def step():
        return sum(float(peer.train_on_batch(x, y)) for peer in peers)

    return _timer(step)


def _fit_timer(model, x, y):
    steps = FLAGS.steps + 1
    xs, ys = np.repeat(x, steps, axis=0), np.repeat(y, steps, axis=0)

    def fit():
        times = fit_step_times()
        model.fit(
            xs,
            ys,
            batch_size=SIZES["batch"],
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[times],
        )
        return statistics.fmean(times.seconds[1:])

    fit()  # Build, compile and warm up before timing.
    return fit


# --------------------------------------------------------- one convolution


def convolution_steppers():
    """`{name: run()}`: one 3x3 convolution (64 -> 64 channels, 8x8, batch
    64), forward and the gradients of its input and kernel, in XLA:CPU and
    in TensorFlow."""
    import tensorflow as tf

    batch = SIZES["batch"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 8, 8, 64)).astype("float32")
    kernel = rng.normal(size=(3, 3, 64, 64)).astype("float32") * 0.05

    @jax.jit
    def jax_conv(x, kernel):
        def loss(x, kernel):
            return jnp.sum(_conv(x, kernel) ** 2)

        value, grads = jax.value_and_grad(loss, argnums=(0, 1))(x, kernel)
        return value + jnp.sum(grads[0]) + jnp.sum(grads[1])

    @tf.function(jit_compile=False)
    def tf_conv(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            value = tf.reduce_sum(tf.nn.conv2d(x, kernel, 1, "SAME") ** 2)
        grads = tape.gradient(value, [x, kernel])
        return value + tf.reduce_sum(grads[0]) + tf.reduce_sum(grads[1])

    jx, jk = jnp.asarray(x), jnp.asarray(kernel)
    tx, tk = tf.constant(x), tf.constant(kernel)
    return {
        "XLA:CPU (jax.jit)": _timer(lambda: float(jax_conv(jx, jk)), repeat=20),
        "TensorFlow (tf.function)": _timer(lambda: float(tf_conv(tx, tk)), repeat=20),
    }


def _timer(step, repeat=None):
    return warm_timer(step, repeat or FLAGS.steps)


# ----------------------------------------------------------------------- main


def main(argv):
    del argv  # Unused.
    if FLAGS.smoke:
        SIZES.update(depth=8, batch=8)
        FLAGS.repeats, FLAGS.steps = 1, 1
    steps = {
        "keras_dml float32": keras_stepper("float32"),
        "keras_dml fit float32": keras_stepper("float32", inside_fit=True),
        "JAX by hand float32": jax_stepper(bfloat16=False),
        "Keras, 2 plain peers float32": plain_keras_stepper("float32"),
        "Keras, 2 plain peers in one model float32": plain_keras_stepper(
            "float32", one_model=True
        ),
        "keras_dml mixed_bfloat16": keras_stepper("mixed_bfloat16"),
        "keras_dml fit mixed_bfloat16": keras_stepper(
            "mixed_bfloat16", inside_fit=True
        ),
        "JAX by hand bfloat16": jax_stepper(bfloat16=True),
        "Keras, 2 plain peers mixed_bfloat16": plain_keras_stepper("mixed_bfloat16"),
        "Keras, 2 plain peers in one model mixed_bfloat16": plain_keras_stepper(
            "mixed_bfloat16", one_model=True
        ),
    }
    convolutions = convolution_steppers()
    setups = {**steps, **convolutions}
    times = {name: [] for name in setups}
    for _ in range(FLAGS.repeats):
        for name, run in setups.items():
            times[name].append(run())
    median = {name: statistics.median(t) for name, t in times.items()}

    print(f"\nMachine: {machine()}")
    platform = jax.devices()[0].platform
    print(f"JAX {jax.__version__} on {platform}, Keras {keras.__version__}.")
    print(
        f"K=2 ResNet-{SIZES['depth']} DML step, batch {SIZES['batch']}, 32x32x3; "
        f"median of {FLAGS.repeats} interleaved rounds of {FLAGS.steps} steps.\n"
    )
    print(
        "| set-up | s / step | its time / keras_dml's (same precision): "
        "train_on_batch | inside fit |"
    )
    print("| --- | ---: | ---: | ---: |")
    for name in steps:
        seconds = median[name]
        ratios = ["", ""]
        if name.startswith(("JAX by hand", "Keras, 2 plain")):
            ours = "mixed_bfloat16" if name.endswith("bfloat16") else "float32"
            ratios = [
                f"{seconds / median[f'keras_dml {way}{ours}']:.2f}x"
                for way in ("", "fit ")
            ]
        print(f"| {name} | {seconds:.4f} | {' | '.join(ratios)} |")
    print(
        "\n| one 3x3 convolution, 64 -> 64 channels at 8x8, forward + both "
        "gradients | ms | / TensorFlow |"
    )
    print("| --- | ---: | ---: |")
    reference = median["TensorFlow (tf.function)"]
    for name in convolutions:
        print(
            f"| {name} | {median[name] * 1e3:.2f} | {median[name] / reference:.2f}x |"
        )


if __name__ == "__main__":
    app.run(main)
