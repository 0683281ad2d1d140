"""Every setting of a training run, declared once.

Each `Setting` has its default and help text here and nowhere else: the absl
flags of every training script are generated from `SETTINGS`
(`define_flags`), `config.json` stores a `RunConfig` of them, and resuming
compares the stored settings with the given ones. A dataset changes only
defaults (`keras_dml.datasets`): the paper's for CIFAR, the official
code's for Market-1501.
"""

import os

from keras_dml import datasets, models
from keras_dml.backends import STRATEGIES
from keras_dml.cohort import kl_ramp, losses
from keras_dml.cohort import mimicry as mimicry_methods
from keras_dml.cohort.mutual_learning import UPDATE_MODES
from keras_dml.setting import Setting

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "piecewise", "cosine")


# The range of every numeric setting of the runner, checked one way
# (keras_dml.checks); a setting marked optional may be left unset (None).
# The datasets' own settings carry theirs.
_RANGES = {
    "teacher_peer": dict(low=0, integer=True),
    "epochs": dict(low=1, integer=True),
    "batch_size": dict(low=1, integer=True),
    "cpu_threads": dict(low=0, integer=True, optional=True),
    "steps_per_epoch": dict(low=1, integer=True, optional=True),
    "branch_stages": dict(low=0, high=3, integer=True, optional=True),
    **{name: dict(low=0, low_open=True) for name in ("lr", "lr_decay", "temperature")},
    **{
        name: dict(low=0)
        for name in (
            "momentum",
            "weight_decay",
            "kl_weight",
            "kl_ramp_up_epochs",
            "kl_burn_in_epochs",
        )
    },
    **{
        name: dict(low=0, high=1, high_open=True)
        for name in ("beta1", "beta2", "label_smoothing", "ema_decay")
    },
}


def _s(name, default, help, kind, group, **kwargs):
    return Setting(name, default, help, kind, group, bounds=_RANGES.get(name), **kwargs)


SETTINGS = (
    # The run.
    _s("dataset", "cifar100", "What to train on.", "str", "run"),
    _s(
        "model_dir",
        None,
        "The run folder: checkpoints, logs, results (required).",
        "str",
        "run",
        resumable=True,
    ),
    _s("seed", None, "Seed for weights, data order and augmentation.", "int", "run"),
    _s(
        "deterministic",
        False,
        "Deterministic ops (exact resume with --seed; slower on GPU).",
        "bool",
        "run",
    ),
    _s(
        "smoke_test",
        False,
        "Tiny data, 2 steps per epoch, 2 epochs: checks a set-up in seconds.",
        "bool",
        "run",
    ),
    # Data.
    _s(
        "data_dir",
        None,
        "Where the dataset is (an archive, its folder, or your image folders); "
        "see README for each dataset.",
        "str",
        "data",
        resumable=True,
    ),
    _s(
        "epochs",
        None,
        "Training epochs.",
        "int",
        "data",
        dataset_default=True,
        resumable=True,
    ),
    _s(
        "batch_size",
        None,
        "Global batch size (split across replicas).",
        "int",
        "data",
        dataset_default=True,
    ),
    _s(
        "steps_per_epoch",
        None,
        "Cap on training steps per epoch (none: the whole training set).",
        "int",
        "data",
    ),
    _s(
        "augment",
        True,
        "Random shifts (and flips, where the dataset allows them) of the "
        "training images (the array and folder datasets).",
        "bool",
        "data",
    ),
    # Peers.
    _s(
        "peers",
        None,
        "Peer architectures, >= 2 names of keras_dml.models.NAMES.",
        "list",
        "peers",
        dataset_default=True,
    ),
    _s(
        "branch_stages",
        None,
        "Train the peers as branches of one CIFAR ResNet (ONE, PCL): they "
        "share its stem and lower stages, and each owns its last N of the 3 "
        "stages (1, as ONE). --peers names one ResNet depth K times. None: "
        "separate networks.",
        "int",
        "peers",
    ),
    _s(
        "synchronized_batchnorm",
        False,
        "BatchNorm statistics over the global batch, not each replica's (small "
        "per-replica batches; slower).",
        "bool",
        "peers",
    ),
    # Mutual learning.
    _s("kl_weight", 1.0, "Weight of the mimicry (KL) term.", "float", "dml"),
    _s("temperature", 1.0, "Softmax temperature of the mimicry term.", "float", "dml"),
    _s(
        "kl_ramp_up_epochs",
        0.0,
        "Epochs over which the mimicry weight rises from 0 to --kl_weight (after "
        "--kl_burn_in_epochs); 0: no ramp (keras_dml.cohort.kl_ramp).",
        "float",
        "dml",
    ),
    _s(
        "kl_burn_in_epochs",
        0.0,
        "Epochs at the start that train without mimicry (weight 0).",
        "float",
        "dml",
    ),
    _s(
        "kl_ramp_shape",
        "sigmoid",
        "Shape of the ramp: sigmoid (exp(-5 (1 - u)^2), mean teacher, ONE) or linear.",
        "str",
        "dml",
        choices=kl_ramp.SHAPES,
    ),
    _s(
        "kl_reduction",
        "mean",
        "How a peer's KL terms combine: mean (the paper's text) or sum (the "
        "official DML code, tf.add_n over the other peers); the same for 2 peers.",
        "str",
        "dml",
        choices=losses.KL_REDUCTIONS,
    ),
    _s(
        "peer_distortion",
        "none",
        "Each peer's own random distortion of its training batch, drawn in "
        "the step after the data pipeline's augmentation, as KDCL's students "
        "see theirs: shift (up to 1/8 of the image each way, filled with "
        "zeros) or flip_shift (and a horizontal flip); none: every peer sees "
        "the same batch.",
        "str",
        "dml",
        choices=("none", "shift", "flip_shift"),
    ),
    _s(
        "mimicry",
        "pairwise",
        "What each peer mimics: each other peer (pairwise, DML), their mean "
        "(ensemble, DML_e), one teacher from all peers (kdcl), the other peers' "
        "weight averages (temporal_mean), their stale copies (codistillation) "
        "or, for branches of one network (--branch_stages), their gated "
        "ensemble (one) or attention-weighted ensembles and a group leader "
        "(okddip: 3 branches or more); README lists the papers.",
        "str",
        "dml",
        choices=mimicry_methods.NAMES,
    ),
    # Each method's own flag arguments (`Mimicry.flags`), as its class
    # declares them.
    *(
        _s(
            flag.flag,
            None,
            f"{flag.help} (--mimicry={method}"
            + (
                f"; none: {mimicry_methods.default_of(method, flag.argument)}.)"
                if mimicry_methods.default_of(method, flag.argument) is not None
                else ".)"
            ),
            flag.kind,
            "dml",
        )
        for method, flag in mimicry_methods.flags()
    ),
    _s(
        "teacher",
        None,
        "A pre-trained, frozen teacher every peer also mimics (offline "
        "distillation): a .keras file of a model returning logits, or of a "
        "cohort (its peer --teacher_peer). With it, --peers may name one "
        "student (Hinton et al.'s knowledge distillation).",
        "str",
        "dml",
    ),
    _s(
        "teacher_peer",
        0,
        "Which peer of a cohort's .keras file --teacher takes.",
        "int",
        "dml",
    ),
    _s(
        "update",
        "simultaneous",
        "Peer update order (sequential: the paper's Algorithm 1).",
        "str",
        "dml",
        choices=UPDATE_MODES,
    ),
    _s(
        "label_smoothing",
        0.0,
        "Label smoothing of the cross-entropy.",
        "float",
        "dml",
        dataset_default=True,
    ),
    _s(
        "independent",
        False,
        "Train the same cohort with kl_weight=0 (the baseline).",
        "bool",
        "dml",
    ),
    # Optimizer and schedule.
    _s(
        "optimizer",
        "sgd",
        "Per-peer optimizer.",
        "str",
        "optimizer",
        choices=OPTIMIZERS,
        dataset_default=True,
    ),
    _s(
        "lr", None, "Initial learning rate.", "float", "optimizer", dataset_default=True
    ),
    _s("momentum", 0.9, "SGD momentum.", "float", "optimizer"),
    _s("nesterov", True, "Nesterov momentum (SGD).", "bool", "optimizer"),
    _s("beta1", 0.9, "Adam beta_1.", "float", "optimizer", dataset_default=True),
    _s("beta2", 0.999, "Adam beta_2.", "float", "optimizer"),
    _s(
        "weight_decay",
        0.0,
        "L2 weight decay on kernels, coupled through the optimizer's gradient "
        "(as SGD's weight_decay in PyTorch or Caffe).",
        "float",
        "optimizer",
        dataset_default=True,
    ),
    _s(
        "ema_decay",
        0.0,
        "Keep an exponential moving average of each peer's weights with this "
        "decay per step (the official DML code: 0.9999); validation, the final "
        "evaluation, cohort.keras and the exports use the averages. 0: off.",
        "float",
        "optimizer",
    ),
    _s(
        "lr_schedule",
        "constant",
        "Learning-rate schedule: constant, piecewise (x lr_decay after each of "
        "lr_milestones) or cosine (to 0 at the last epoch).",
        "str",
        "optimizer",
        choices=LR_SCHEDULES,
        dataset_default=True,
    ),
    _s(
        "lr_milestones",
        (),
        "Epochs after which lr *= lr_decay (piecewise schedule).",
        "int_list",
        "optimizer",
        dataset_default=True,
    ),
    _s(
        "lr_decay", 0.1, "Learning-rate factor at each milestone.", "float", "optimizer"
    ),
    # Evaluation.
    # Devices.
    _s(
        "strategy",
        "auto",
        "Devices: one_device, mirrored (every local GPU), multi_worker (several "
        "hosts: TF_CONFIG on TensorFlow, KERAS_DISTRIBUTION_* on JAX) or auto. "
        "TensorFlow uses tf.distribute, JAX keras.distribution.DataParallel; "
        "PyTorch trains on one device.",
        "str",
        "devices",
        choices=STRATEGIES,
        resumable=True,
    ),
    _s(
        "cpu_threads",
        None,
        "Threads per TensorFlow op on a machine without GPUs (none: cores // "
        "number of peers, so the peers' ops run side by side; 0: TensorFlow's "
        "own choice).",
        "int",
        "devices",
        resumable=True,
    ),
    _s(
        "mixed_precision",
        False,
        "mixed_float16 on GPUs, mixed_bfloat16 on CPUs.",
        "bool",
        "devices",
    ),
    # Reporting.
    _s(
        "export",
        True,
        "Export every peer for TF Serving at the end.",
        "bool",
        "reporting",
        resumable=True,
    ),
    _s(
        "compare_dir",
        None,
        "Another run's model_dir to draw beside this one in curves.png.",
        "str",
        "reporting",
        resumable=True,
    ),
    _s(
        "verbose",
        1,
        "Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch.",
        "int",
        "reporting",
        resumable=True,
    ),
    # The settings only some datasets take, as each declares them (the
    # re-ID settings, the small datasets' subsets and held-out splits).
    *datasets.settings(),
)
BY_NAME = {s.name: s for s in SETTINGS}
# The settings that are one mimicry method's arguments: setting -> (method,
# argument of its class in keras_dml.mimicry).
MIMICRY_ARGUMENTS = {
    flag.flag: (method, flag.argument) for method, flag in mimicry_methods.flags()
}
GROUPS = (
    "run",
    "data",
    "peers",
    "dml",
    "optimizer",
    "evaluation",
    "devices",
    "reporting",
)


class RunConfig:
    """The values of every setting of one run; read as attributes.

    Build one with `resolve(given)`, which fills in the dataset's defaults and
    validates; `asdict()` is what `config.json` stores.
    """

    __slots__ = ("_values",)

    def __init__(self, values):
        unknown = sorted(set(values) - set(BY_NAME))
        if unknown:
            raise ValueError(f"Unknown settings {unknown}. Valid: {sorted(BY_NAME)}")
        object.__setattr__(
            self, "_values", {s.name: values.get(s.name, s.default) for s in SETTINGS}
        )

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("RunConfig is immutable; use replace(...)")

    def __eq__(self, other):
        return isinstance(other, RunConfig) and self._values == other._values

    def __repr__(self):
        return f"RunConfig({self._values})"

    def asdict(self):
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in self._values.items()
        }

    def replace(self, **changes):
        return RunConfig({**self._values, **changes})


def _as_tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def defaults_for(dataset, smoke_test=False):
    """Every setting's value when only `dataset` (and `smoke_test`) is given."""
    entry = datasets.get(dataset)
    values = {s.name: s.default for s in SETTINGS}
    values.update({k: _as_tuple(v) for k, v in entry.defaults.items()})
    if smoke_test:
        values.update(entry.smoke_defaults)
    values.update(dataset=dataset, smoke_test=smoke_test)
    return values


def resolve(given):
    """The `RunConfig` of a run from the settings given explicitly.

    Later sources win: each setting's default, the dataset's defaults, the
    dataset's smoke-test sizes (with `smoke_test`), then `given`.

    Raises:
        ValueError: a setting is invalid; the message names every one, as
            `--<name>`.
    """
    given = {k: _as_tuple(v) for k, v in given.items() if v is not None}
    dataset = given.get("dataset", BY_NAME["dataset"].default)
    datasets.get(dataset)  # An unknown name is named here.
    values = defaults_for(dataset, bool(given.get("smoke_test")))
    values.update(given)
    config = RunConfig(values)
    validate(config)
    return config


def mimicry_arguments(config):
    """`{argument: value}` of the run's mimicry method, from the settings
    given (the method's own defaults for the others)."""
    return {
        argument: getattr(config, name)
        for name, (method, argument) in MIMICRY_ARGUMENTS.items()
        if method == config.mimicry and getattr(config, name) is not None
    }


def _mimicry_problems(config):
    problems = []
    for name, (method, argument) in MIMICRY_ARGUMENTS.items():
        value = getattr(config, name)
        if value is None:
            continue
        if config.mimicry != method:
            problems.append(
                f"--{name} applies to --mimicry={method} only (received "
                f"--mimicry={config.mimicry})."
            )
        try:  # The class's own check, in the flag's words.
            mimicry_methods.class_of(method).check_arguments(**{argument: value})
        except ValueError as error:
            problem = str(error).replace(f"`{argument}`", f"--{name}")
            problems.append(problem.replace(f"Received: {argument}=", "Received: "))
    variant = config.kdcl_variant
    if config.mimicry == "kdcl" and variant == "general" and not config.validation_size:
        problems.append(
            "--kdcl_variant=general fits its ensemble weights on images held out "
            "of the training set after every epoch (never on the test set): give "
            "--validation_size > 0."
        )
    if config.mimicry in mimicry_methods.NAMES:
        method = mimicry_methods.class_of(config.mimicry)
        # (Two members, peers or a --teacher, are checked with --peers.)
        if method.min_peers > 2 and len(config.peers or ()) < method.min_peers:
            problems.append(
                f"--mimicry={config.mimicry} needs at least {method.min_peers} "
                f"peers. Received: --peers={','.join(config.peers or ())}"
            )
        if method.requires_trunk and config.branch_stages is None:
            problems.append(
                f"--mimicry={config.mimicry} trains the branches of one network: "
                "give --branch_stages (1, as its paper)."
            )
        if config.update == "sequential" and not method.supports_sequential:
            why = (
                "its teachers are copies that no peer's update changes within a step"
                if method.uses_peer_copies
                else "it trains branches of one network, which learn at once"
            )
            problems.append(
                f"--mimicry={config.mimicry} takes --update=simultaneous only: {why}."
            )
    return problems


def validate(config):
    """Raises ValueError naming every setting that cannot work."""
    problems = []
    for setting in SETTINGS:
        problem = setting.choice_problem(getattr(config, setting.name))
        if problem is not None:
            problems.append(problem)
    if config.dataset not in datasets.NAMES:
        problems.append(
            f"--dataset must be one of {', '.join(datasets.NAMES)}. "
            f"Received: {config.dataset}"
        )
    if not config.model_dir:
        problems.append("--model_dir is required: the folder the run writes to.")
    peers = list(config.peers or ())
    if len(peers) < (1 if config.teacher else 2):
        problems.append(
            f"--peers needs at least 2 names (or 1 with --teacher). "
            f"Received: {','.join(peers)}"
        )
    if config.teacher is not None:
        if not config.teacher.endswith(".keras"):
            problems.append(
                f"--teacher must be a .keras file. Received: {config.teacher}"
            )
        elif not os.path.isfile(config.teacher):
            problems.append(f"--teacher={config.teacher} is not a file.")
    if config.peer_distortion != "none":
        conflicts = [
            flag
            for flag, given in (
                ("--branch_stages", config.branch_stages is not None),
                ("--update=sequential", config.update == "sequential"),
                (
                    f"--mimicry={config.mimicry}",
                    config.mimicry in mimicry_methods.NAMES
                    and mimicry_methods.class_of(config.mimicry).uses_peer_copies,
                ),
            )
            if given
        ]
        if conflicts:
            problems.append(
                f"--peer_distortion={config.peer_distortion} gives separate peers "
                "their own views of the batch in the simultaneous step: not with "
                f"{' or '.join(conflicts)}."
            )
    if config.branch_stages is not None:
        names = {models.canonical_name(p) for p in peers}
        if len(names) != 1 or models.resnet_depth(names.pop()) is None:
            problems.append(
                "--branch_stages makes the peers branches of one CIFAR ResNet: "
                "--peers must name one of resnet8, resnet20, resnet32, resnet56, "
                f"resnet110, once per branch. Received: {','.join(peers)}"
            )
        if config.update == "sequential":
            problems.append(
                "--branch_stages trains with --update=simultaneous only: the "
                "shared stages learn from every branch's loss at once."
            )
    unknown = [p for p in peers if models.canonical_name(p) not in models.NAMES]
    if unknown:
        valid = ", ".join(models.NAMES)
        problems.append(f"--peers: unknown peer {unknown[0]!r}. Valid names: {valid}")
    for setting in SETTINGS:
        problems += setting.value_problems(getattr(config, setting.name))
    if config.dataset in datasets.NAMES:
        # The dataset's own checks (the digits' train_size range, re-ID's
        # peers), and the dataset settings it does not take.
        problems += datasets.get(config.dataset).check(config)
        problems += datasets.settings_problems(config)
    problems += _mimicry_problems(config)
    milestones = list(config.lr_milestones or ())
    if any(m < 1 for m in milestones) or milestones != sorted(set(milestones)):
        problems.append(
            "--lr_milestones must be increasing positive epochs. "
            f"Received: {','.join(map(str, milestones))}"
        )
    if config.lr_schedule == "piecewise" and not milestones:
        problems.append("--lr_schedule=piecewise needs --lr_milestones.")
    if problems:
        raise ValueError("\n".join(problems))


# ------------------------------------------------------------------- flags


def define_flags(flag_values=None, defaults=None):
    """Defines one absl flag per setting, listed in `--help` by group.

    Flags default to None ("not given"), so that `given_settings` can tell a
    setting the user chose from one the dataset fills in; the help text gives
    the default, or says the dataset chooses it.

    Args:
        defaults: `{name: value}` overriding the default shown and used when a
            flag is not given (the thin per-dataset scripts set `dataset`).
    """
    from absl import flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    defaults = defaults or {}
    for setting in SETTINGS:
        help_text = f"{setting.help} (default: {_shown_default(setting, defaults)})"
        if setting.choices:
            help_text += f" One of: {', '.join(setting.choices)}."
        module = f"{setting.group} settings"
        define = {
            "str": flags.DEFINE_string,
            "int": flags.DEFINE_integer,
            "float": flags.DEFINE_float,
            "bool": flags.DEFINE_bool,
            "list": flags.DEFINE_list,
            "int_list": flags.DEFINE_list,
        }[setting.kind]
        define(
            setting.name, None, help_text, flag_values=flag_values, module_name=module
        )
    return flag_values


def _shown_default(setting, defaults):
    if setting.dataset_default and setting.name not in defaults:
        if "dataset" not in defaults:
            return "the dataset's"
        defaults = defaults_for(defaults["dataset"])
    default = defaults.get(setting.name, setting.default)
    if default is None:
        return "none"
    if isinstance(default, tuple):
        return ",".join(map(str, default)) or "none"
    return str(default).lower() if isinstance(default, bool) else str(default)


def help_text(defaults=None, *, own_flags=(), hidden=()):
    """What `--help` shows: a script's `own_flags` first (absl flags), then
    every setting once, by group, with its default, but those in `hidden`
    (settings the script sets per run and refuses from the user)."""
    import textwrap

    def entry(name, text):
        return [f"  --{name}"] + textwrap.wrap(
            text, width=78, initial_indent="      ", subsequent_indent="      "
        )

    defaults = defaults or {}
    lines = []
    if own_flags:
        lines.append("This script's own flags:")
        for flag in own_flags:
            lines += entry(flag.name, f"{flag.help} Default: {flag.default}.")
        lines.append("")
    lines.append("Settings (a dataset changes only their defaults):")
    for group in GROUPS:
        lines.append(f"\n{group}:")
        for setting in (s for s in SETTINGS if s.group == group):
            if setting.name in hidden:
                continue
            text = f"{setting.help} Default: {_shown_default(setting, defaults)}."
            if setting.name == "dataset":
                text += " " + "; ".join(
                    f"{d.name}: {d.description}" for d in datasets.REGISTRY.values()
                )
            elif setting.choices:
                text += f" One of: {', '.join(setting.choices)}."
            lines += entry(setting.name, text)
    if hidden:
        lines.append("")
        lines += textwrap.wrap(
            "Set per run by this script (refused when given): "
            f"{', '.join('--' + name for name in hidden)}.",
            width=78,
        )
    return "\n".join(lines)


def given_settings(flag_values, defaults=None):
    """`{name: value}` of the settings given on the command line (and the
    script's own `defaults`), parsed; flags not given are left out."""
    given = dict(defaults or {})
    for setting in SETTINGS:
        flag = flag_values[setting.name]
        if flag.value is None:
            continue
        value = flag.value
        if setting.kind == "int_list":
            try:
                value = tuple(int(v) for v in value)
            except ValueError:
                raise ValueError(
                    f"--{setting.name} must be integers. Received: {','.join(value)}"
                ) from None
        elif setting.kind == "list":
            value = tuple(value)
        given[setting.name] = value
    return given
