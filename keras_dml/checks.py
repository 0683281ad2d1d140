"""Number checks, written once: a setting or argument is a finite number (or
an integer) in a range, and its problem reads the same wherever it is
checked, e.g. "--lr must be a number > 0. Received: 0.0" for a flag and
"`decay` must be a number in [0, 1). Received: decay=1.0" for an argument.

The cohort, the data pipelines and the settings all use it, so it imports
nothing of keras_dml.
"""

import math
import numbers


def number_problem(
    name,
    value,
    low=None,
    high=None,
    *,
    low_open=False,
    high_open=False,
    integer=False,
    why="",
):
    """None when `value` is a finite number (an int with `integer`, never a
    bool) within the bounds, else the one-line problem naming `name`.

    Args:
        low, high: the bounds (None: unbounded), included unless `low_open` /
            `high_open`.
        why: a note after the bounds, e.g. " (0 trains the peers
            independently)".
    """
    kind = numbers.Integral if integer else numbers.Real
    ok = (
        isinstance(value, kind)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (low is None or (value > low if low_open else value >= low))
        and (high is None or (value < high if high_open else value <= high))
    )
    if ok:
        return None
    if low is not None and high is not None:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        bounds = f"in {left}{low}, {high}{right}"
    elif low is not None:
        bounds = f"{'>' if low_open else '>='} {low}"
    elif high is not None:
        bounds = f"{'<' if high_open else '<='} {high}"
    else:
        bounds = "(finite)"
    what = "an integer" if integer else "a number"
    # An argument (`name`) is received as Keras says it: `name=value`.
    received = f"{name.strip('`')}={value!r}" if name.startswith("`") else repr(value)
    return f"{name} must be {what} {bounds}{why}. Received: {received}"


def check_number(name, value, low=None, high=None, **options):
    """Raises ValueError with `number_problem`'s line unless `value` passes."""
    problem = number_problem(name, value, low, high, **options)
    if problem is not None:
        raise ValueError(problem)
