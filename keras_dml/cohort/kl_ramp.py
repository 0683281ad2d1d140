"""A ramp-up (and burn-in) of the mimicry weight over the first training steps.

At the start every peer's predictions are noise; mimicking them from step 0
can pull the peers together before either has learned anything (two deep
peers can then collapse to a constant prediction). Mean teacher (Tarvainen
& Valpola, 2017, after Laine & Aila, 2017), ONE (Lan et al., 2018) and PCL
(Wu & Gong, 2021) ramp the distillation weight up; codistillation (Anil et
al., 2018) starts it after a burn-in. At optimizer step t (0-based):

    factor(t) = 0                               for t < burn_in
    u         = min(1, (t - burn_in) / ramp_up)  otherwise
    factor    = exp(-5 (1 - u)^2)   ("sigmoid", Laine & Aila's)
              = u                   ("linear")

and the mimicry term's weight is `kl_weight * factor(t)`. With ramp_up = 0
and burn_in = 0 the factor is 1 (no ramp), as before. The step count is the
peer optimizers' `iterations`, saved in every checkpoint, so a resumed run
continues the ramp where it stopped.
"""

import math

from keras import ops

from keras_dml.checks import check_number

SHAPES = ("sigmoid", "linear")


def check(ramp_up_steps, burn_in_steps, shape):
    """Raises ValueError naming a bad argument."""
    for name, value in (
        ("kl_ramp_up_steps", ramp_up_steps),
        ("kl_burn_in_steps", burn_in_steps),
    ):
        check_number(f"`{name}`", value, 0, integer=True, why=" (optimizer steps)")
    if shape not in SHAPES:
        raise ValueError(
            f"`kl_ramp_shape` must be one of {SHAPES}. Received: kl_ramp_shape="
            f"{shape!r}"
        )


def is_constant(ramp_up_steps, burn_in_steps):
    return ramp_up_steps == 0 and burn_in_steps == 0


def factor(step, ramp_up_steps, burn_in_steps, shape):
    """The weight factor at optimizer step `step` (a tensor or a number)."""
    if is_constant(ramp_up_steps, burn_in_steps):
        return 1.0
    step = ops.cast(step, "float32")
    started = ops.cast(ops.greater_equal(step, float(burn_in_steps)), "float32")
    if ramp_up_steps == 0:
        return started
    u = ops.clip((step - float(burn_in_steps)) / float(ramp_up_steps), 0.0, 1.0)
    ramp = ops.exp(-5.0 * ops.square(1.0 - u)) if shape == "sigmoid" else u
    return started * ramp


def reference(step, ramp_up_steps, burn_in_steps, shape):
    """`factor` in plain Python, for tests and documentation."""
    if is_constant(ramp_up_steps, burn_in_steps):
        return 1.0
    if step < burn_in_steps:
        return 0.0
    if ramp_up_steps == 0:
        return 1.0
    u = min(1.0, (step - burn_in_steps) / ramp_up_steps)
    return math.exp(-5.0 * (1.0 - u) ** 2) if shape == "sigmoid" else u
