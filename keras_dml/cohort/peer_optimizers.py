"""The cohort's per-peer optimizers, seen by Keras as the model's one optimizer."""

import keras
from keras import ops

from keras_dml.cohort.keras_internals import moving_averages


def averaging_optimizer(optimizer):
    """The optimizer that keeps `optimizer`'s moving averages of the weights
    (`use_ema=True`), or None: a `LossScaleOptimizer` keeps them in its inner
    optimizer."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return inner if getattr(inner, "use_ema", False) else None


def _assign_copy(variable, value):
    """`variable.assign(value)` with a buffer of its own: on JAX, Keras's
    assign keeps `value`'s own array, and a later step that donates either
    variable's buffer would free both."""
    variable.assign(ops.copy(ops.convert_to_tensor(value)))


@keras.saving.register_keras_serializable(package="keras_dml")
class PeerOptimizers(keras.optimizers.Optimizer):
    """Holds one optimizer per peer; what `MutualLearningModel.optimizer` is.

    Each peer optimizer owns its peer's variables and nothing else, so no
    optimizer state (momentum, Adam moments, loss scale) is shared between
    peers. This wrapper is what Keras machinery sees as `model.optimizer`:

    - It exposes `optimizers`, the protocol Keras's `LearningRateScheduler`,
      `ReduceLROnPlateau` and `TensorBoard` callbacks use to adjust and log
      every sub-optimizer's learning rate.
    - `learning_rate` reads the peers' common learning rate (AttributeError
      when they differ) and assigning it sets every peer's.
    - `iterations` is the number of training steps (every peer optimizer
      applies once per step).
    - `build()` builds each peer optimizer over its own peer's variables.

    `MutualLearningModel.compile()` creates it; you do not need to.

    Args:
        optimizers: one `keras.optimizers.Optimizer` per peer, all distinct.
        variable_groups: a callable returning, per peer, the list of variables
            its optimizer updates (supplied by the model).
        name: name of this wrapper.
    """

    def __init__(self, optimizers, variable_groups=None, name="peer_optimizers"):
        super().__init__(learning_rate=0.0, name=name)
        optimizers = list(optimizers)
        for i, opt in enumerate(optimizers):
            if not isinstance(opt, keras.optimizers.Optimizer):
                raise ValueError(
                    "Every peer optimizer must be a `keras.optimizers.Optimizer`. "
                    f"Received at index {i}: {opt!r}"
                )
        if len({id(opt) for opt in optimizers}) != len(optimizers):
            raise ValueError(
                "Each peer needs its own optimizer object: sharing one would "
                "mix the peers' optimizer state. Received: "
                f"{[opt.name for opt in optimizers]}"
            )
        self._peer_optimizers = optimizers
        self._variable_groups = variable_groups

    @property
    def optimizers(self):
        """The peer optimizers, in peer order."""
        return self._peer_optimizers

    def _groups(self):
        if self._variable_groups is None:
            raise ValueError(
                f"{self.__class__.__name__} does not know which variables belong "
                "to which peer. It is created by `MutualLearningModel.compile()`; "
                "build or apply it through the model."
            )
        groups = [list(g) for g in self._variable_groups()]
        if len(groups) != len(self._peer_optimizers):
            raise ValueError(
                f"Got {len(groups)} variable groups for "
                f"{len(self._peer_optimizers)} peer optimizers."
            )
        return groups

    def build(self, var_list=None):
        """Builds each peer optimizer over its own peer's variables.

        `var_list` (what Keras passes: all of the model's trainable variables)
        is only used to check that every variable has an owner.
        """
        groups = self._groups()
        owner = {}
        for i, (opt, variables) in enumerate(zip(self._peer_optimizers, groups)):
            if not opt.built:
                opt.build(variables)
            for v in variables:
                owner[id(v)] = i
        if var_list is not None:
            orphans = [v.path for v in var_list if id(v) not in owner]
            if orphans:
                raise ValueError(
                    f"Variables {orphans} belong to no peer; every trainable "
                    "variable of a MutualLearningModel must belong to one peer."
                )
        # A plain dict of ints: assigning variables here would track them as
        # this wrapper's own state.
        self._owner_of = owner
        super().build([v for g in groups for v in g])

    def apply(self, grads, trainable_variables=None):
        """Routes each gradient to the optimizer of the peer owning the variable."""
        if not self.built:
            self.build()
        if trainable_variables is None:
            raise ValueError(
                "PeerOptimizers.apply() needs `trainable_variables` to route "
                "each gradient to its peer's optimizer."
            )
        routed = [([], []) for _ in self._peer_optimizers]
        for grad, var in zip(grads, trainable_variables):
            grads_k, vars_k = routed[self._owner_of[id(var)]]
            grads_k.append(grad)
            vars_k.append(var)
        for opt, (grads_k, vars_k) in zip(self._peer_optimizers, routed):
            if vars_k:
                opt.apply(grads_k, vars_k)

    @property
    def iterations(self):
        return self._peer_optimizers[0].iterations

    @property
    def learning_rate(self):
        rates = [opt.learning_rate for opt in self._peer_optimizers]
        values = {float(ops.convert_to_numpy(r)) for r in rates}
        if len(values) != 1:
            # AttributeError, as Keras's MultiOptimizer: `hasattr(optimizer,
            # "learning_rate")` is then False, and Keras's own attribute
            # machinery (which probes the getter before setting) still works.
            raise AttributeError(
                "The peers' learning rates differ "
                f"({[float(ops.convert_to_numpy(r)) for r in rates]}), so the "
                "cohort has no single learning rate. Read "
                "`model.peer_optimizers[i].learning_rate` instead."
            )
        return rates[0]

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        for opt in self._peer_optimizers:
            opt.learning_rate = learning_rate

    def _own_variables(self):
        """This wrapper's own variables (its step counter and unused rate):
        what the base class's `variables` lists."""
        return keras.optimizers.Optimizer.variables.fget(self)

    @property
    def variables(self):
        variables = self._own_variables()
        for opt in self._peer_optimizers:
            variables.extend(opt.variables)
        return variables

    # Saving walks `optimizers` and stores each peer optimizer under its own
    # path; storing their variables here too would duplicate them.
    def save_own_variables(self, store):
        for i, variable in enumerate(self._own_variables()):
            store[str(i)] = variable.numpy()

    def load_own_variables(self, store):
        own = self._own_variables()
        if len(store.keys()) != len(own):
            raise ValueError(
                f"Saved state of {self.name} has {len(store.keys())} variables, "
                f"expected {len(own)}."
            )
        for i, variable in enumerate(own):
            variable.assign(store[str(i)])

    @property
    def averages_weights(self):
        """True when some peer optimizer keeps a moving average of its peer's
        weights (`use_ema=True`)."""
        return any(averaging_optimizer(opt) for opt in self._peer_optimizers)

    def swap_averages(self):
        """Exchanges each averaging peer's weights with their moving averages;
        a second call swaps them back. Keras's `SwapEMAWeights` does this for
        one optimizer; here a peer's may sit inside a `LossScaleOptimizer`."""
        for opt in self._peer_optimizers:
            averaging = averaging_optimizer(opt)
            if averaging is None:
                continue
            for variable, average in moving_averages(averaging):
                if average is None:  # Keras keeps no average for some variables.
                    continue
                weights = ops.convert_to_numpy(variable)
                _assign_copy(variable, average)
                average.assign(weights)

    def finalize_variable_values(self, var_list):
        """Puts each averaging peer's moving averages (`use_ema=True`) into
        its weights, as Keras's `fit` does at its end; other peer optimizers
        finalize as they do on their own."""
        for opt, variables in zip(self._peer_optimizers, self._groups()):
            averaging = averaging_optimizer(opt)
            if averaging is None:
                opt.finalize_variable_values(variables)
                continue
            # Not Keras's own finalize: it assigns the average's buffer
            # itself, which JAX's next donating step (e.g. `evaluate`) then
            # frees under both variables.
            for variable, average in moving_averages(averaging):
                if average is not None:
                    _assign_copy(variable, average)

    def get_config(self):
        return {
            "name": self.name,
            "optimizers": [
                keras.saving.serialize_keras_object(opt)
                for opt in self._peer_optimizers
            ],
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        optimizers = [
            keras.saving.deserialize_keras_object(c, custom_objects=custom_objects)
            for c in config.pop("optimizers")
        ]
        return cls(optimizers, **config)
