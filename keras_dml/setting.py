"""One setting of a run: its flag, default, help text, kind and checks.

The runner's settings (`keras_dml.training.config`) and the settings a
dataset declares for itself (`keras_dml.datasets`: the re-ID ones, the
subsets of the small datasets) are all `Setting`s, so that every script
gets a flag for each, `--help` lists each under its group, and each is
checked one way (`keras_dml.checks` for numbers).
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from keras_dml.checks import number_problem


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting: its flag `--<name>`, default, help text and kind.

    Attributes:
        kind: "str", "int", "float", "bool", "list" (of strings) or
            "int_list"; how the flag parses.
        group: the heading it is listed under in `--help`.
        choices: the allowed values, if limited.
        resumable: may differ when a stored run is resumed (where it is,
            what is printed); every other setting must match.
        dataset_default: the default depends on the dataset (`--help` says so).
        bounds: the range of a number, as `keras_dml.checks.number_problem`
            takes it, plus `optional=True` where it may be left unset (None).
        check: `value -> problem or None`, for what a range cannot say.
        instead: said when the setting is given to a dataset that does not
            declare it (what to use there).
    """

    name: str
    default: Any
    help: str
    kind: str
    group: str
    choices: tuple | None = None
    resumable: bool = False
    dataset_default: bool = False
    bounds: dict | None = None
    check: Callable | None = None
    instead: str = ""

    def choice_problem(self, value):
        """The problem of `value` outside `choices`, or None."""
        if self.choices and value not in self.choices:
            return (
                f"--{self.name} must be one of {', '.join(self.choices)}. "
                f"Received: {value}"
            )
        return None

    def value_problems(self, value):
        """The problems of `value` with the bounds and the check."""
        problems = []
        if self.bounds is not None:
            bounds = dict(self.bounds)
            if not (bounds.pop("optional", False) and value is None):
                problems.append(number_problem(f"--{self.name}", value, **bounds))
        if self.check is not None:
            problems.append(self.check(value))
        return [p for p in problems if p is not None]

    def is_used(self, value):
        """Whether `value` asks for something (not the default, not off)."""
        return value != self.default and value not in (None, 0, False, ())
