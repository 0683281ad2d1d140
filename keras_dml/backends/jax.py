"""JAX's runtime: one device, or `keras.distribution.DataParallel` over the
local devices (mirrored) or every process's (multi_worker, after
`keras.distribution.initialize` reads the `KERAS_DISTRIBUTION_*`
variables). JAX's CPU and TPU kernels are deterministic already; on GPUs,
set XLA_FLAGS=--xla_gpu_deterministic_ops=true.

JAX itself is imported only where a run needs its runtime, so that the
checks of a run's settings start nothing.
"""

import contextlib
import os

import keras
import numpy as np

from keras_dml.backends.base import Devices, Runtime, check_strategy


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


def _num_processes():
    given = os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES") or "1"
    try:
        return int(given)
    except ValueError:
        raise ValueError(
            f"KERAS_DISTRIBUTION_NUM_PROCESSES must be a number of processes. "
            f"Received: {given!r}"
        ) from None


class JaxRuntime(Runtime):
    name = "jax"

    def make_devices(self, strategy="auto"):
        check_strategy(strategy)
        processes = _num_processes()
        if strategy == "auto" and processes > 1:
            strategy = "multi_worker"
        if strategy == "multi_worker" and (
            processes < 2 or not os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES")
        ):
            raise ValueError(
                "--strategy=multi_worker on JAX needs "
                "KERAS_DISTRIBUTION_JOB_ADDRESSES (the first process's host:port), "
                "KERAS_DISTRIBUTION_NUM_PROCESSES (2 or more) and "
                "KERAS_DISTRIBUTION_PROCESS_ID (0 on the first process), as "
                "keras.distribution.initialize reads them."
            )
        import jax  # After the checks: they need no JAX runtime.

        if strategy == "auto":
            several = sum(d.platform != "cpu" for d in jax.local_devices()) > 1
            strategy = "mirrored" if several else "one_device"
        if strategy == "multi_worker" and not jax.distributed.is_initialized():
            keras.distribution.initialize()  # Once per process.
        if strategy == "one_device":
            return JaxDevices()
        # Every process's pipeline keeps its own slice of each global batch
        # (`JaxDevices.training_data`); Keras must not shard it again.
        distribution = keras.distribution.DataParallel(
            devices=keras.distribution.list_devices(), auto_shard_dataset=False
        )
        return JaxDevices(distribution, jax.process_count(), jax.process_index())

    def has_gpu(self):
        import jax

        return any(d.platform == "gpu" for d in jax.devices())

    def versions(self):
        import jax

        return {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}

    def for_inference(self, function):
        # Each batch is given whole to the (replicated) weights under a
        # DataParallel distribution, so a batch of any size works.
        # Lazy: the JAX step file imports jax, which the checks of a run's
        # settings (make_devices' refusals) must not load.
        from keras_dml.cohort.steps.jax import whole_batches

        def run(inputs):
            with whole_batches():
                return function(np.asarray(inputs))

        return run


RUNTIME = JaxRuntime()
