"""Every private Keras (and TensorFlow) attribute keras_dml reads, each behind
one function.

Keras has no public way to ask these things. A release may rename any of
them; `tests/test_keras_conventions.py` checks each function on real Keras
objects, so such a release fails there, by name, rather than somewhere in
training. Nothing else in keras_dml reads a private attribute of Keras.

The one private hook keras_dml overrides, `keras.Model._maybe_symbolic_build`
(see `MutualLearningModel`), is named in `SYMBOLIC_BUILD_HOOK`; the tests
check that Keras still has it, with the arguments the override takes.
"""

SYMBOLIC_BUILD_HOOK = "_maybe_symbolic_build"
SYMBOLIC_BUILD_ARGUMENTS = ("iterator", "data_batch")


def keras_tensor_producer(tensor):
    """The layer that produced a symbolic (Keras) tensor, or None
    (`tensor._keras_history.operation`)."""
    history = getattr(tensor, "_keras_history", None)
    return getattr(history, "operation", None)


def declared_direction(metric):
    """A metric's direction as Keras declares it, "up", "down" or None
    (`metric._direction`)."""
    return getattr(metric, "_direction", None)


def all_layers(layer):
    """`layer` and every layer inside it, nested models included
    (`layer._flatten_layers()`)."""
    return list(layer._flatten_layers())


def optimizer_built_for(optimizer):
    """The variables a built optimizer was built for
    (`optimizer._trainable_variables`)."""
    return list(optimizer._trainable_variables)


def moving_averages(optimizer):
    """`(variable, its moving average)` pairs of an optimizer built with
    `use_ema=True`, in build order (`optimizer._trainable_variables` and
    `optimizer._model_variables_moving_average`)."""
    return list(
        zip(optimizer._trainable_variables, optimizer._model_variables_moving_average)
    )


def explicit_strategy(model):
    """The `tf.distribute` strategy a model was created under, or None when
    it was created outside any strategy scope (`model._distribute_strategy`;
    the public `distribute_strategy` gives the default strategy then)."""
    return model._distribute_strategy


def in_multi_worker_mode(strategy):
    """Whether a `MultiWorkerMirroredStrategy` spans several workers, rather
    than running as one local worker (`strategy.extended._in_multi_worker_mode()`,
    TensorFlow's)."""
    return strategy.extended._in_multi_worker_mode()


def current_stateless_scope():
    """The innermost active `keras.StatelessScope`, or None (Keras's
    `get_stateless_scope`, not exported)."""
    from keras.src.backend.common.stateless_scope import get_stateless_scope

    return get_stateless_scope()
