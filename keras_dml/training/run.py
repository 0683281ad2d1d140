"""One runner for every dataset: a run folder owned by one process, the data,
the cohort on the backend's devices, a resumable fit, and what a run leaves behind.

`scripts/train.py` (and its aliases `train_cifar.py`, `train_market1501.py`)
maps its flags onto a `RunConfig` and calls `run`; `reproduce_table.py` calls
it once per table cell. Multi-worker input, mixed precision, resume and the
NaN stop are the same for every dataset because they are this code.
"""

import contextlib
import json
import os
import shutil
import time
import zipfile

import keras

from keras_dml import datasets, files, models
from keras_dml.backends import runtime
from keras_dml.callbacks import checkpoint_files
from keras_dml.cohort import mimicry as mimicry_methods
from keras_dml.cohort.mutual_learning import MutualLearningModel
from keras_dml.data.epochs import resolve_seed
from keras_dml.export import export_peers
from keras_dml.training import config as settings
from keras_dml.training import loop, reports
from keras_dml.training.lock import RunLock

CONFIG_FILE = "config.json"
CLASSES_FILE = "classes.json"  # The class names, where the data names them.
# The input normalization the peers trained with, which an export of the run's
# cohort applies by default (scripts/export_peers.py).
NORMALIZATION_FILE = "normalization.json"


def normalization_record(preprocessing):
    """What `normalization.json` holds: `{"name": ...}` or `{"mean": [...],
    "std": [...]}`."""
    if isinstance(preprocessing, str):
        return {"name": preprocessing}
    mean, std = preprocessing
    return {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}


# ------------------------------------------------------------------ resume


def stored_settings(model_dir):
    """The settings `model_dir/config.json` holds, or None; runs stored by
    keras_dml 0.1 are read as they were meant."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is unreadable ({error}).") from error
    if not isinstance(stored, dict):
        raise ValueError(
            f"{path} holds {type(stored).__name__} JSON, not a run's settings "
            "(an object of setting names and values). Use another --model_dir, "
            "or remove the file to start that run over."
        )
    if "dataset" not in stored:  # keras_dml 0.1: train_cifar / train_market1501.
        if "image_height" in stored:
            stored["dataset"] = "market1501"
            stored["image_size"] = [
                stored.pop("image_height"),
                stored.pop("image_width"),
            ]
            stored["weights"] = stored.get("weights") or "none"
        else:
            stored["dataset"] = "cifar100"
    return stored


def _comparable(name, value):
    if name == "peers" and value is not None:
        return [models.canonical_name(p) for p in value]
    return list(value) if isinstance(value, (list, tuple)) else value


def check_resume(config):
    """`config` with the stored seed when `config.model_dir` holds a run;
    raises ValueError naming every setting that differs from the stored run's
    (other than the resumable ones)."""
    stored = stored_settings(config.model_dir)
    if stored is None:
        return config
    if not _completed_an_epoch(config.model_dir):
        # Nothing to resume (it failed or stopped in its first epoch): the
        # corrected command starts it over.
        return config
    current = config.asdict()
    if config.seed is None:
        current["seed"] = stored.get("seed")
    # A setting added after the run was stored had its default then.
    defaults = settings.defaults_for(stored["dataset"], stored.get("smoke_test", False))
    different = {}
    for setting in settings.SETTINGS:
        name = setting.name
        if setting.resumable:
            continue
        was = stored.get(name, defaults[name])
        if _comparable(name, was) != _comparable(name, current[name]):
            different[name] = (was, current[name])
    if different:
        listed = "; ".join(
            f"--{k}: stored {_shown(a)}, given {_shown(b)}"
            for k, (a, b) in different.items()
        )
        raise ValueError(
            f"{config.model_dir} holds a run with other settings ({listed}). Re-run "
            "with the same flags to resume it, or use another --model_dir."
        )
    return config.replace(seed=current["seed"])


def _completed_an_epoch(model_dir):
    directory = os.path.join(model_dir, "checkpoints")
    return bool(checkpoint_files(directory)) or os.path.exists(
        os.path.join(directory, "state.json")
    )


def _shown(value):
    return (
        ",".join(map(str, value)) if isinstance(value, (list, tuple)) else repr(value)
    )


# ------------------------------------------------------------------- set-up


@contextlib.contextmanager
def prepared_run(config):
    """Everything a run does before building its model, and undoes after.

    In order: checks the data path; sets TensorFlow's CPU threads and
    creates the devices (first of the backend's work: neither can change
    once ops have run);
    takes the run folder's lock (the chief's); refuses to resume a different
    run; reads and checks the data (a batch larger than the training set is
    refused here); and only then writes anything: config.json, after
    removing the temporaries a killed run left. A run that cannot start
    leaves no folder that would refuse the corrected command.

    Yields:
        `(config, devices, write_to, data)`: the config with its seed, the
        `Devices` it trains on, the folder this process writes to (`model_dir` on the
        chief, a private temporary folder on other workers, removed after) and the
        `LoadedData`.
    """
    settings.validate(config)
    backend = runtime()
    problem = backend.cpu_threads_problem(config.cpu_threads)
    if problem:
        raise ValueError(problem)
    problem = datasets.data_dir_problem(config)
    if problem:
        raise ValueError(problem)
    created = not os.path.exists(config.model_dir)
    files.ensure_writable_dir(config.model_dir, "--model_dir")
    try:
        # Before the backend's first op, after which threads cannot change.
        backend.set_cpu_threads(len(config.peers), config.cpu_threads)
        devices = backend.make_devices(config.strategy)
        write_to = devices.writable_dir(config.model_dir)
        with contextlib.ExitStack() as stack:
            if write_to == config.model_dir:
                stack.enter_context(RunLock(config.model_dir))
                files.refuse_links(config.model_dir)
            else:
                # Another worker's copy of the chief's files: not kept.
                stack.callback(shutil.rmtree, write_to, ignore_errors=True)
            config = check_resume(config)
            devices.check_seed(config.seed)
            devices.check_batch_size(config.batch_size)
            config = config.replace(seed=resolve_seed(config.seed))
            data = datasets.get(config.dataset).load(config)
            _check_against_data(config, data)
            _check_classes(config.model_dir, data.class_names)
            _check_teacher_file(config.teacher)
            if write_to == config.model_dir:
                for path in files.remove_stale_temporaries(config.model_dir):
                    print(f"Removed {path}, left by an interrupted run.")
            with loop.writing_outputs(write_to):
                files.write_json(os.path.join(write_to, CONFIG_FILE), config.asdict())
                files.write_json(
                    os.path.join(write_to, NORMALIZATION_FILE),
                    normalization_record(data.preprocessing),
                )
                if data.class_names is not None:
                    files.write_json(
                        os.path.join(write_to, CLASSES_FILE), list(data.class_names)
                    )
            created = False  # It holds a run now.
            with _precision_and_seeds(config), devices.running():
                yield config, devices, write_to, data
    finally:
        if created:
            _remove_if_empty(config.model_dir)


def _check_classes(model_dir, class_names):
    """Refuses to resume a run whose data names other classes: renaming a
    class folder changes which label each folder gets (labels follow the
    sorted names), and the checkpoint's logits would silently mean others."""
    path = os.path.join(model_dir, CLASSES_FILE)
    if class_names is None or not os.path.exists(path):
        return
    if not _completed_an_epoch(model_dir):
        return  # Nothing trained yet: the corrected data starts it over.
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is unreadable ({error}).") from None
    if list(stored) != list(class_names):
        gone = [c for c in stored if c not in class_names]
        new = [c for c in class_names if c not in stored]
        detail = (
            f"not in the data now: {gone}; new: {new}"
            if gone or new
            else "the same names in another order"
        )
        raise ValueError(
            f"{model_dir} holds a run trained on the classes {list(stored)} (label "
            f"order), and the data now has {list(class_names)} ({detail}). Resuming "
            "would give its labels other meanings: restore the class folders, or "
            "use another --model_dir."
        )


def _check_against_data(config, data):
    if config.batch_size > data.num_train:
        raise ValueError(
            f"--batch_size={config.batch_size} is larger than the training set "
            f"({data.num_train} examples)."
        )


def _check_teacher_file(path):
    """Refuses a --teacher that is not a whole `.keras` archive before
    anything is written (it is loaded only when the cohort is built)."""
    if path is None:
        return
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(
            f"--teacher={path} is not a readable .keras file ({error})."
        ) from None
    if bad is not None or not {"config.json", "model.weights.h5"} <= names:
        problem = f"member {bad} is corrupt" if bad else "no config.json or weights"
        raise ValueError(f"--teacher={path} is not a whole .keras file ({problem}).")


def _remove_if_empty(folder):
    with contextlib.suppress(OSError):
        leftover = set(os.listdir(folder)) - {".lock"}
        if not leftover:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, ".lock"))
            os.rmdir(folder)


@contextlib.contextmanager
def _precision_and_seeds(config):
    if config.deterministic:
        runtime().make_deterministic()
    keras.utils.set_random_seed(config.seed)
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(
        loop.mixed_precision_policy(config.mixed_precision)
    )
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


# ------------------------------------------------------------------- cohort


def apply_weight_decay(peer, weight_decay):
    """L2 on every kernel (convolutions, dense), coupled through the
    optimizer as in the CIFAR ResNet recipes: the gradient gains
    `weight_decay * w`, as with PyTorch's / Caffe's SGD `weight_decay` (hence
    L2 of weight_decay / 2). BatchNorm scales and biases are not decayed."""
    if weight_decay <= 0:
        return
    regularizer = keras.regularizers.L2(weight_decay / 2)
    for variable in peer.trainable_variables:
        if variable.path.endswith("kernel"):
            variable.regularizer = regularizer


def learning_rate(config, steps_per_epoch):
    """The learning rate or schedule of `config.lr_schedule`."""
    if config.lr_schedule == "piecewise":
        values = [
            config.lr * config.lr_decay**i for i in range(len(config.lr_milestones) + 1)
        ]
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            [m * steps_per_epoch for m in config.lr_milestones], values
        )
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.lr, decay_steps=config.epochs * steps_per_epoch
        )
    return config.lr


def make_optimizer(config, steps_per_epoch):
    rate = learning_rate(config, steps_per_epoch)
    # Keras's moving average of the weights, per peer optimizer (the cohort
    # clones this one for each peer).
    averaging = {"use_ema": config.ema_decay > 0}
    if averaging["use_ema"]:
        averaging["ema_momentum"] = config.ema_decay
    if config.optimizer == "adam":
        return keras.optimizers.Adam(
            rate, beta_1=config.beta1, beta_2=config.beta2, **averaging
        )
    return keras.optimizers.SGD(
        rate, momentum=config.momentum, nesterov=config.nesterov, **averaging
    )


def load_teacher(path, peer=0):
    """The frozen teacher in the `.keras` file at `path` (None for None): the
    model it holds, or peer `peer` of a saved cohort."""
    if path is None:
        return None
    try:
        loaded = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many kinds for a bad file.
        raise ValueError(
            f"--teacher={path} could not be loaded as a Keras model: {error}"
        ) from None
    if isinstance(loaded, MutualLearningModel):
        if peer >= len(loaded.peers):
            raise ValueError(
                f"--teacher_peer={peer}, but {path} is a cohort of "
                f"{len(loaded.peers)} peers."
            )
        return loaded.peers[peer]
    return loaded


def build_cohort(config, data, steps_per_epoch):
    """The compiled MutualLearningModel of a run (call inside `Devices.scope()`)."""
    trunk = None
    if config.branch_stages is None:
        peers = [
            models.build(
                name,
                data.num_classes,
                data.image_shape,
                synchronized_batchnorm=config.synchronized_batchnorm,
                weights=None if config.weights == "none" else config.weights,
                dropout=config.dropout,
            )
            for name in config.peers
        ]
    else:
        trunk, peers = models.resnet_cifar_branches(
            len(config.peers),
            depth=models.resnet_depth(models.canonical_name(config.peers[0])),
            num_classes=data.num_classes,
            branch_stages=config.branch_stages,
            input_shape=data.image_shape,
            synchronized_batchnorm=config.synchronized_batchnorm,
        )
        apply_weight_decay(trunk, config.weight_decay)
    for peer in peers:
        apply_weight_decay(peer, config.weight_decay)
    model = MutualLearningModel(
        peers,
        trunk=trunk,
        teacher=load_teacher(config.teacher, config.teacher_peer),
        kl_weight=0.0 if config.independent else config.kl_weight,
        temperature=config.temperature,
        mimicry=mimicry_methods.get(
            config.mimicry, **settings.mimicry_arguments(config)
        ),
        update=config.update,
        label_smoothing=config.label_smoothing,
        kl_ramp_up_steps=round(config.kl_ramp_up_epochs * steps_per_epoch),
        kl_burn_in_steps=round(config.kl_burn_in_epochs * steps_per_epoch),
        kl_ramp_shape=config.kl_ramp_shape,
        kl_reduction=config.kl_reduction,
        peer_distortion=peer_distortion(config.peer_distortion, config.seed),
    )
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch), metrics=["accuracy"]
    )
    return model


def peer_distortion(name, seed):
    """The `--peer_distortion` layer (None for "none"): random shifts of up
    to 1/8 of the image each way, zero-filled (the mean, after the
    pipeline's normalization), and with "flip_shift" a horizontal flip."""
    if name == "none":
        return None
    layers = [
        keras.layers.RandomTranslation(0.125, 0.125, fill_mode="constant", seed=seed)
    ]
    if name == "flip_shift":
        layers.insert(0, keras.layers.RandomFlip("horizontal", seed=seed))
    return keras.Sequential(layers, name="peer_distortion")


def _method_callbacks(model, data):
    """What the cohort's mimicry method needs during `fit`: KDCL-General
    refits its weights on the held-out split (`config.validate` made sure
    there is one, so `data.validation` is not the test set)."""
    method = model.mimicry
    if isinstance(method, mimicry_methods.KDCL) and method.variant == "general":
        return [mimicry_methods.RefreshEnsembleWeights(data.validation)]
    return []


def _training_data(config, data, devices, initial_epoch):
    return devices.training_data(
        lambda input_context: data.training_epochs(
            config.seed, config.epochs, initial_epoch, input_context
        )
    )


# ------------------------------------------------------------------ reports


def run_label(config):
    """ "independent", "DML" (pairwise mimicry) or the mimicry method's name;
    "distillation" for one student of a `--teacher`, "<label> + teacher" for
    several."""
    if config.independent or config.kl_weight == 0:
        return "independent"
    label = "DML" if config.mimicry == "pairwise" else config.mimicry
    if config.teacher is not None:
        # One student and a teacher is Hinton et al.'s distillation.
        return "distillation" if len(config.peers) == 1 else f"{label} + teacher"
    return label


def _reports(
    config, write_to, data, model, history, evaluation, started, devices, steps
):
    names = [peer.name for peer in model.peers]
    results = {
        "dataset": config.dataset,
        "peer_names": names,
        "teacher": None if model.teacher is None else model.teacher.name,
        "run": run_label(config),
        "epochs_completed": history[-1]["epoch"] if history else 0,
        "steps_per_epoch": steps,
        "train_seconds": sum(row.get("epoch_seconds", 0.0) for row in history),
        "wall_time_seconds": time.time() - started,
        "flags": config.asdict(),
        "versions": reports.versions(),
        "backend": keras.backend.backend(),
        "strategy": devices.name,
        "replicas": devices.replicas,
        "history": history,
    }
    title = " + ".join(config.peers) + f" on {config.dataset}"
    # The evaluation's own report (re-ID writes its table and CMC plot), and
    # what it adds to results.json, first as before.
    results = {**data.evaluation.report(write_to, evaluation, title), **results}
    files.write_json(os.path.join(write_to, "results.json"), results)
    curves = [(run_label(config), history, "-")]
    if config.compare_dir:
        other = os.path.join(config.compare_dir, "results.json")
        if os.path.isfile(other):
            with open(other) as f:
                compared = json.load(f)
            curves.append(
                (compared.get("run", "compared"), compared.get("history", []), "--")
            )
        else:
            print(
                f"warning: {other} does not exist (unfinished run?); "
                "curves.png leaves it out."
            )
    if any(key.startswith("val_") for row in history for key in row):
        display = {f"peer{i}": f"peer{i} {name}" for i, name in enumerate(config.peers)}
        reports.plot_curves(
            os.path.join(write_to, "curves.png"), curves, title, names=display
        )
    return results


# ---------------------------------------------------------------------- run


def run(config):
    """Trains (or resumes) a run and writes its artifacts into `model_dir`.

    Artifacts: `config.json`, `checkpoints/` (resume state), `history.csv`,
    `tensorboard/`, `cohort.keras`, `export/` (each peer and the ensemble as
    TF Serving SavedModels), `results.json`, and `curves.png` (classification)
    or `reid_results.md` / `.json` and `cmc.png` (re-ID).

    Returns the results dict (also in `results.json`).

    Raises:
        ValueError: a setting is invalid, the data does not fit it, or
            `model_dir` holds another run.
        RunFolderInUse: another process is using `model_dir`.
        TrainingDiverged: the loss became NaN (the last checkpoint is kept).
        keras_dml.files.OutputError: an output could not be written.
    """
    started = time.time()
    with prepared_run(config) as (config, devices, write_to, data):
        steps = data.steps_per_epoch(config.batch_size, config.steps_per_epoch)
        with devices.scope():
            model = build_cohort(config, data, steps)
        history = loop.fit_with_checkpoints(
            model,
            lambda initial_epoch: _training_data(config, data, devices, initial_epoch),
            epochs=config.epochs,
            steps_per_epoch=steps,
            write_to=write_to,
            restore_from=config.model_dir,  # Every worker resumes from the chief's.
            restore_scope=devices.scope,
            validation_data=data.validation,
            validation_name=data.validation_name,
            verbose=config.verbose,
            callbacks=_method_callbacks(model, data),
        )
        evaluation = data.evaluation.evaluate(model, verbose=0)
        with loop.writing_outputs(write_to):
            loop.save_model(model, os.path.join(write_to, "cohort.keras"))
            if config.export:
                export_peers(
                    model,
                    os.path.join(write_to, "export"),
                    preprocessing=data.preprocessing,
                    overwrite=True,
                )
            return _reports(
                config,
                write_to,
                data,
                model,
                history,
                evaluation,
                started,
                devices,
                steps,
            )
