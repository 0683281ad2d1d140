"""TensorFlow's runtime: `tf.distribute` strategies, op determinism, threads
per op, `tf.function` inference, SavedModels written in this process.

- one_device: `OneDeviceStrategy` (the first GPU, else the CPU).
- mirrored: `MirroredStrategy` over every local GPU (the CPU when none).
- multi_worker: `MultiWorkerMirroredStrategy`, configured by `TF_CONFIG`.
- auto: multi_worker when `TF_CONFIG` names several workers, mirrored with
  several GPUs, else one_device.
"""

import json
import os

import tensorflow as tf

from keras_dml.backends.base import Devices, Runtime, check_strategy
from keras_dml.cpu_threads import configure_cpu_threads


def _num_workers():
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from error
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def make_strategy(name="auto"):
    """A `tf.distribute` strategy from its `--strategy` name (see the module).

    Create it at program start: the multi-worker runtime must start before any
    other TensorFlow op runs.
    """
    check_strategy(name)
    if name == "auto":
        if _num_workers() > 1:
            name = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "one_device"
    if name == "multi_worker":
        if _num_workers() < 1:
            raise ValueError(
                "--strategy=multi_worker needs TF_CONFIG, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}} on the first host.'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def is_chief(strategy):
    """True on the one process that writes checkpoints and reports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return not has_chief and task_type == "worker" and task_id == 0


def num_workers(strategy):
    """The processes (workers) `strategy` trains on: those of its cluster
    (`MultiWorkerMirroredStrategy`), else 1."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(1, sum(len(cluster.get(kind, [])) for kind in ("chief", "worker")))


class TensorFlowDevices(Devices):
    """A `tf.distribute` strategy."""

    def __init__(self, strategy):
        super().__init__(
            type(strategy).__name__,
            replicas=strategy.num_replicas_in_sync,
            processes=num_workers(strategy),
        )
        self.strategy = strategy

    @property
    def is_chief(self):
        # The chief is named by TF_CONFIG (a "chief" task, else worker 0).
        return is_chief(self.strategy)

    def scope(self):
        # Variables created here are mirrored; multi-worker variables also
        # load collectively here.
        return self.strategy.scope()

    def training_data(self, make):
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Each worker keeps its slice of every global batch.
            return self.strategy.distribute_datasets_from_function(make)
        return make(None)


class TensorFlowRuntime(Runtime):
    name = "tensorflow"
    exports_in_process = True

    def make_devices(self, strategy="auto"):
        return TensorFlowDevices(make_strategy(strategy))

    def has_gpu(self):
        return bool(tf.config.list_physical_devices("GPU"))

    def make_deterministic(self):
        tf.config.experimental.enable_op_determinism()

    def cpu_threads_problem(self, threads):
        return None

    def set_cpu_threads(self, num_peers, threads=None):
        # Before TensorFlow's first op, after which it cannot change.
        return configure_cpu_threads(num_peers, threads)

    def versions(self):
        return {"devices": [d.name for d in tf.config.list_logical_devices()]}

    def peer_output(self, peer, inputs):
        return peer(inputs, training=False)

    def for_inference(self, function):
        # One traced graph per input shape, instead of each peer's eager call.
        return tf.function(function)


RUNTIME = TensorFlowRuntime()
