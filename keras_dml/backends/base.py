"""The devices of a run and the runtime of a backend: what every backend
provides, and the defaults of one device in one process.

`--strategy` keeps its four names on every backend; each backend's runtime
maps them onto its own engine:

- one_device: one device (the GPU if there is one).
- mirrored: every local device, each taking a slice of every global batch.
- multi_worker: the devices of several processes (hosts).
- auto: multi_worker with several workers, mirrored with several GPUs, else
  one_device.

Every backend sees the same global batch per step: replicas each take a
slice of it, and on several processes each process reads only its slice
(the data pipelines shard by `tf.distribute.InputContext`).
"""

import contextlib
import tempfile

import numpy as np

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


def check_strategy(name):
    """Raises ValueError unless `name` is one of `STRATEGIES`."""
    if name not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {name!r}. Valid names: {', '.join(STRATEGIES)}"
        )


class Devices:
    """One device in one process. The base of the others.

    Attributes:
        name: what results.json reports as the run's strategy.
        replicas: devices that each take a slice of every global batch.
        processes: processes training together.
        process_index: this process's index among them (0: the chief).
    """

    def __init__(self, name, replicas=1, processes=1, process_index=0):
        self.name = name
        self.replicas = replicas
        self.processes = processes
        self.process_index = process_index

    @property
    def is_chief(self):
        """True on the one process that writes checkpoints and reports."""
        return self.process_index == 0

    def scope(self):
        """The context the cohort is built and restored in."""
        return contextlib.nullcontext()

    def running(self):
        """The context around everything the run does with the cohort."""
        return contextlib.nullcontext()

    def training_data(self, make):
        """The training dataset from `make(input_context)`: this process's
        share of every global batch (`input_context` is None for all of it)."""
        return make(None)

    def writable_dir(self, model_dir):
        """`model_dir` on the chief; a private temporary folder on the others.

        Every process takes part in saving (the variables may be read
        collectively), but only the chief's files are kept.
        """
        if self.is_chief:
            return model_dir
        return tempfile.mkdtemp(prefix="keras_dml_worker_")

    def check_seed(self, seed):
        """Several processes must draw the same data order: they need one seed."""
        if self.processes > 1 and seed is None:
            raise ValueError(
                f"--seed is required with {self.processes} workers: every worker "
                "draws the same permutation of the data and keeps its own slice "
                "of each batch."
            )

    def check_batch_size(self, batch_size):
        """Raises ValueError when the devices cannot split `batch_size`."""


class Runtime:
    """A backend's runtime. The defaults are those of a backend that trains
    on one device, is deterministic as it is, chooses its own threads, runs
    peers through `predict_on_batch` and exports in a TensorFlow child
    process; each backend's file overrides what differs.

    Attributes:
        name: the backend's name, as `KERAS_BACKEND` spells it.
        exports_in_process: True when this process writes SavedModels itself
            (TensorFlow); otherwise `keras_dml.export` hands a saved copy of
            the cohort to a TensorFlow child process.
    """

    name = None
    exports_in_process = False

    def make_devices(self, strategy="auto"):
        """The `Devices` for `--strategy=strategy`. Create them at program
        start, before the backend runs anything: multi-process runtimes
        must start first."""
        check_strategy(strategy)
        if strategy in ("mirrored", "multi_worker"):
            raise ValueError(
                f"--strategy={strategy} needs several devices, and the {self.name} "
                "backend trains on one here. Use --strategy=one_device (or auto), "
                "or KERAS_BACKEND=tensorflow or jax to train on several devices."
            )
        return Devices(f"one device ({self.name})")

    def has_gpu(self):
        """True when this backend sees a GPU."""
        raise NotImplementedError

    def make_deterministic(self):
        """Deterministic kernels from now on in this process."""

    def cpu_threads_problem(self, threads):
        """Why `--cpu_threads=threads` cannot apply here, or None."""
        if threads:
            return (
                f"--cpu_threads sets TensorFlow's threads per op; this process "
                f"trains on {self.name} (KERAS_BACKEND), which chooses its own. "
                "Leave it unset."
            )
        return None

    def set_cpu_threads(self, num_peers, threads=None):
        """Threads per op for `num_peers` peers on a CPU, before the first op;
        the number set, or None where this backend chooses its own."""
        return None

    def versions(self):
        """This backend's library versions and devices, for results.json."""
        return {}

    def peer_output(self, peer, inputs):
        """`peer`'s inference output for one batch of `inputs`, inside the
        function `for_inference` returns."""
        return peer.predict_on_batch(inputs)

    def for_inference(self, function):
        """`function(inputs)` (calling `peer_output`) as this backend runs
        inference best; here each peer's own compiled `predict_on_batch`
        on host arrays."""

        def run(inputs):
            return function(np.asarray(inputs))

        return run
