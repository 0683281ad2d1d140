"""Where a run trains: the devices of this process's Keras backend.

`--strategy` keeps its four names on every backend; each backend maps them
onto its own engine:

- one_device: TensorFlow's `OneDeviceStrategy`; JAX's first device; the
  device Keras's torch backend picks (the GPU if there is one).
- mirrored: `MirroredStrategy`; `keras.distribution.DataParallel` over the
  local devices; refused on PyTorch.
- multi_worker: `MultiWorkerMirroredStrategy` (`TF_CONFIG`);
  `keras.distribution.initialize` (the `KERAS_DISTRIBUTION_*` variables),
  then `DataParallel` over every process's devices; refused on PyTorch.
- auto: multi_worker with several workers (`TF_CONFIG`, or
  `KERAS_DISTRIBUTION_NUM_PROCESSES` on JAX), mirrored with several GPUs,
  else one_device.

Every backend sees the same global batch per step: TensorFlow's replicas and
JAX's devices each take a slice of it, and on several processes each process
reads only its slice (the data pipelines shard by `tf.distribute.InputContext`).
"""

import contextlib
import os
import tempfile

import keras

from keras_dml.training import strategies

STRATEGIES = strategies.STRATEGIES


def make_devices(name="auto"):
    """The `Devices` for `--strategy=name` on this process's Keras backend.

    Create it at program start, before the backend runs anything: both
    TensorFlow's multi-worker runtime and JAX's processes must start first.
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {name!r}. Valid names: {', '.join(STRATEGIES)}"
        )
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return TensorFlowDevices(strategies.make_strategy(name))
    if backend == "jax":
        return _jax_devices(name)
    if name in ("mirrored", "multi_worker"):
        raise ValueError(
            f"--strategy={name} needs several devices, and the {backend} backend "
            "trains on one here. Use --strategy=one_device (or auto), or "
            "KERAS_BACKEND=tensorflow or jax to train on several devices."
        )
    return Devices(f"one device ({backend})")


def has_gpu():
    """True when this process's backend sees a GPU."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


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


class TensorFlowDevices(Devices):
    """A `tf.distribute` strategy."""

    def __init__(self, strategy):
        super().__init__(
            type(strategy).__name__,
            replicas=strategy.num_replicas_in_sync,
            processes=strategies.num_workers(strategy),
        )
        self.strategy = strategy

    @property
    def is_chief(self):
        # The chief is named by TF_CONFIG (a "chief" task, else worker 0).
        return strategies.is_chief(self.strategy)

    def scope(self):
        # Variables created here are mirrored; multi-worker variables also
        # load collectively here.
        return self.strategy.scope()

    def training_data(self, make):
        import tensorflow as tf

        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Each worker keeps its slice of every global batch.
            return self.strategy.distribute_datasets_from_function(make)
        return make(None)


class JaxDevices(Devices):
    """One JAX device, or a `keras.distribution.DataParallel` over several
    (on one process or several)."""

    def __init__(self, distribution=None, processes=1, process_index=0):
        replicas = len(distribution.device_mesh.devices.flat) if distribution else 1
        super().__init__(
            type(distribution).__name__ if distribution else "one device (jax)",
            replicas=replicas,
            processes=processes,
            process_index=process_index,
        )
        self.distribution = distribution

    def check_batch_size(self, batch_size):
        if batch_size % self.replicas:
            raise ValueError(
                f"--batch_size={batch_size} does not split over {self.replicas} "
                "JAX devices: DataParallel gives each an equal slice of every "
                f"batch. Use a multiple of {self.replicas}."
            )

    def running(self):
        # Keras's JAX trainer reads the distribution when it builds, fits,
        # evaluates and predicts; it must stay set for all of them.
        if self.distribution is None:
            return contextlib.nullcontext()
        return self.distribution.scope()

    def training_data(self, make):
        if self.processes == 1:
            return make(None)
        import tensorflow as tf

        # Keras's JAX trainer takes each process's slice of the global batch
        # and assembles the global batch from them; one "replica" per
        # process here, since the slicing is per process.
        return make(
            tf.distribute.InputContext(
                num_input_pipelines=self.processes,
                input_pipeline_id=self.process_index,
                num_replicas_in_sync=self.processes,
            )
        )


def _jax_devices(name):
    given = os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES") or "1"
    try:
        processes = int(given)
    except ValueError:
        raise ValueError(
            f"KERAS_DISTRIBUTION_NUM_PROCESSES must be a number of processes. "
            f"Received: {given!r}"
        ) from None
    if name == "auto" and processes > 1:
        name = "multi_worker"
    if name == "multi_worker" and (
        processes < 2 or not os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES")
    ):
        raise ValueError(
            "--strategy=multi_worker on JAX needs KERAS_DISTRIBUTION_JOB_ADDRESSES "
            "(the first process's host:port), KERAS_DISTRIBUTION_NUM_PROCESSES "
            "(2 or more) and KERAS_DISTRIBUTION_PROCESS_ID (0 on the first "
            "process), as keras.distribution.initialize reads them."
        )
    import jax  # After the checks: they need no JAX runtime.

    if name == "auto":
        several = sum(d.platform != "cpu" for d in jax.local_devices()) > 1
        name = "mirrored" if several else "one_device"
    if name == "multi_worker" and not jax.distributed.is_initialized():
        keras.distribution.initialize()  # Once per process.
    if name == "one_device":
        return JaxDevices()
    # Every process's pipeline keeps its own slice of each global batch
    # (`JaxDevices.training_data`); Keras must not shard it again.
    distribution = keras.distribution.DataParallel(
        devices=keras.distribution.list_devices(), auto_shard_dataset=False
    )
    return JaxDevices(distribution, jax.process_count(), jax.process_index())
