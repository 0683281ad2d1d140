r"""The DML training step on each Keras backend: TensorFlow, JAX and PyTorch,
the same `MutualLearningModel` code, over peers, cohort sizes and precisions.

python benchmarks/backend_step.py [--rounds=3] [--repeats=5] [--steps=5]
python benchmarks/backend_step.py --gpu [--output=gpu_backend_step.md]

The default is this CPU machine's measurement: K=2 ResNet-32, batch 64,
float32 and `mixed_bfloat16`, steps by `train_on_batch`. `--gpu` measures
the whole matrix on a GPU machine: each backend; float32, `mixed_bfloat16`
and `mixed_float16`; K = 2 and 4; ResNet-32 and WRN-28-10 peers; batch 128;
every step timed inside `fit` (from its batch's start to its loss read
back); the table is printed and written to --output. Install the GPU builds
first (`pip install "jax[cuda12]"` and PyTorch's CUDA wheels; TensorFlow's
`tensorflow[and-cuda]`): the `bench` extra brings CPU builds. A backend or a
case that cannot run is a table cell saying why, not a stopped run.

A backend is chosen when Keras is imported, so each backend runs in its own
process; the processes run one after the other, --rounds times in turn
(TensorFlow, JAX, PyTorch, TensorFlow, ...), so a slow spell of a shared
machine hits each. Within a process every case is timed in turn, --repeats
times each, --steps synchronized steps per timing. Reported: per case and
backend, the median over every timing of every round, and each backend's
time relative to TensorFlow's.

On a CPU, TensorFlow gets one thread per op as scripts/train.py sets it
(`keras_dml.cpu_threads`); JAX (XLA) and PyTorch use their own thread pools
over every core.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("rounds", 3, "Processes per backend, run in turn.")
flags.DEFINE_integer("repeats", 5, "Timings per case in each process.")
flags.DEFINE_integer("steps", 5, "Training steps per timing.")
flags.DEFINE_list("peers", ["resnet32"], "Peer networks (keras_dml.models names).")
flags.DEFINE_list("cohort_sizes", ["2"], "Numbers of peers K.")
flags.DEFINE_list(
    "precisions",
    ["float32", "mixed_bfloat16"],
    "Keras dtype policies (float32, mixed_bfloat16, mixed_float16).",
)
flags.DEFINE_integer("batch", 64, "Batch size.")
flags.DEFINE_bool(
    "inside_fit", False, "Time each step inside `fit` instead of `train_on_batch`."
)
flags.DEFINE_string("output", None, "Also write the table (markdown) here.")
flags.DEFINE_bool(
    "gpu",
    False,
    "The GPU matrix: --peers=resnet32,wide_resnet --cohort_sizes=2,4 "
    "--precisions=float32,mixed_bfloat16,mixed_float16 --batch=128 "
    "--inside_fit --rounds=1 --output=gpu_backend_step.md (flags given "
    "explicitly keep their values).",
)
flags.DEFINE_string("worker", None, "Internal: time this backend and print JSON.")
flags.DEFINE_bool(
    "smoke",
    False,
    "Tiny settings (small peers, batch 8, one round, one step): checks that "
    "the script runs, as the test suite does; the numbers mean nothing.",
)

BACKENDS = ("tensorflow", "jax", "torch")
LABELS = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}
GPU_MATRIX = {
    "peers": ["resnet32", "wide_resnet"],
    "cohort_sizes": ["2", "4"],
    "precisions": ["float32", "mixed_bfloat16", "mixed_float16"],
    "batch": 128,
    "inside_fit": True,
    "rounds": 1,
    "output": "gpu_backend_step.md",
}
# The smoke run's stand-ins: the same families, a fraction of the size.
SMOKE_PEERS = {
    "resnet32": ("resnet8", {}),
    "wide_resnet": ("wide_resnet", {"depth": 10, "width": 1}),
}


def _cases():
    return [
        (peer, int(size), policy)
        for peer in FLAGS.peers
        for size in FLAGS.cohort_sizes
        for policy in FLAGS.precisions
    ]


def _key(case):
    return "|".join(map(str, case))


def _device():
    """The accelerator this backend runs on, in words (else "CPU")."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return details.get("device_name", "GPU")
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return device.device_kind
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    return "CPU"


def time_backend():
    """In a worker process: `{"device", "times": {case: [seconds per step]},
    "errors": {case: why}}`."""
    import keras
    import numpy as np
    from timing import fit_step_times

    import keras_dml
    from keras_dml.cpu_threads import configure_cpu_threads

    device = _device()
    if keras.backend.backend() == "tensorflow" and device == "CPU":
        configure_cpu_threads(2)
    batch = 8 if FLAGS.smoke else FLAGS.batch
    steps = FLAGS.steps
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch * (steps + 1), 32, 32, 3)).astype("float32")
    y = rng.integers(0, 100, size=batch * (steps + 1)).astype("int32")

    def stepper(peer, size, policy):
        keras.mixed_precision.set_global_policy(policy)
        try:
            name, options = peer, {}
            if FLAGS.smoke:
                name, options = SMOKE_PEERS.get(peer, (peer, {}))
            peers = [
                keras_dml.models.get(name, num_classes=100, **options)
                for _ in range(size)
            ]
            model = keras_dml.MutualLearningModel(peers)
            model.compile(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
        finally:
            keras.mixed_precision.set_global_policy("float32")

        def by_batch():
            start = time.perf_counter()
            for _ in range(steps):
                float(
                    model.train_on_batch(x[:batch], y[:batch], return_dict=True)["loss"]
                )
            return (time.perf_counter() - start) / steps

        def inside_fit():
            times = fit_step_times()
            model.fit(
                x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0,
                callbacks=[times],
            )  # fmt: skip
            return statistics.fmean(times.seconds[1:])  # The first is warm-up.

        run = inside_fit if FLAGS.inside_fit else by_batch
        run()  # Build, compile and warm up before timing.
        return run

    steppers, errors = {}, {}
    for case in _cases():
        try:
            steppers[_key(case)] = stepper(*case)
        except Exception as error:  # A cell of the table says why.
            errors[_key(case)] = f"{type(error).__name__}: {str(error)[:80]}"
    times = {key: [] for key in steppers}
    for _ in range(FLAGS.repeats):
        for key, run in steppers.items():
            times[key].append(run())
    return {"device": device, "times": times, "errors": errors}


def _run_worker(backend):
    names = (
        "repeats", "steps", "peers", "cohort_sizes", "precisions", "batch",
        "inside_fit", "smoke",
    )  # fmt: skip
    flags_ = []
    for name in names:
        value = getattr(FLAGS, name)
        if isinstance(value, list):
            value = ",".join(value)
        flags_.append(f"--{name}={value}")
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), f"--worker={backend}", *flags_],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or ["no output"])[-1][:80]
        return {"device": "?", "times": {}, "errors": {"*": f"worker failed: {why}"}}
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(median, errors, devices):
    """The markdown table: seconds per step per backend, and the ratios."""
    lines = [
        "| peers | K | precision | TensorFlow (s / step) | JAX | PyTorch | "
        "JAX / TensorFlow | PyTorch / TensorFlow |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case in _cases():
        key = _key(case)
        cells = []
        for backend in BACKENDS:
            if key in median[backend]:
                cells.append(f"{median[backend][key]:.4f}")
            else:
                why = errors[backend].get(key) or errors[backend].get("*", "not run")
                cells.append(f"({why})")
        reference = median["tensorflow"].get(key)
        for backend in ("jax", "torch"):
            seconds = median[backend].get(key)
            ok = reference and seconds
            cells.append(f"{seconds / reference:.2f}x" if ok else "")
        peer, size, policy = case
        lines.append(f"| {peer} | {size} | {policy} | {' | '.join(cells)} |")
    lines.append("")
    lines.append(
        "Devices: " + ", ".join(f"{LABELS[b]} on {devices[b]}" for b in BACKENDS) + "."
    )
    return "\n".join(lines)


def _apply_gpu_matrix(argv_flags):
    """--gpu's settings, except those given on the command line."""
    for name, value in GPU_MATRIX.items():
        if name not in argv_flags:
            setattr(FLAGS, name, value)


def main(argv):
    del argv  # Unused.
    if FLAGS.gpu and not FLAGS.worker:
        given = {arg.split("=")[0].lstrip("-") for arg in sys.argv[1:]}
        _apply_gpu_matrix(given)
    if FLAGS.smoke:
        FLAGS.rounds, FLAGS.repeats, FLAGS.steps = 1, 1, 1
    if FLAGS.worker:
        print(json.dumps(time_backend()))
        return
    times = {b: {} for b in BACKENDS}
    errors = {b: {} for b in BACKENDS}
    devices = {}
    for _ in range(FLAGS.rounds):
        for backend in BACKENDS:
            result = _run_worker(backend)
            devices[backend] = result["device"]
            errors[backend].update(result["errors"])
            for key, seconds in result["times"].items():
                times[backend].setdefault(key, []).extend(seconds)
    median = {
        b: {key: statistics.median(t) for key, t in times[b].items()} for b in BACKENDS
    }

    from timing import machine

    way = "inside `fit`" if FLAGS.inside_fit else "by `train_on_batch`"
    text = (
        f"Machine: {machine()}\n"
        f"DML step, batch {8 if FLAGS.smoke else FLAGS.batch}, 32x32x3, 100 "
        f"classes, SGD + Nesterov, steps timed {way}; median of "
        f"{FLAGS.rounds} x {FLAGS.repeats} timings of {FLAGS.steps} steps.\n\n"
        + table(median, errors, devices)
    )
    print("\n" + text)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            f.write(text + "\n")
        print(f"\nWrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
