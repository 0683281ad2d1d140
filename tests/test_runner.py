"""The one runner: settings declared once, the dataset registry, every
dataset's smoke run, the run folder's lock and the checks made before
anything is written."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from absl import flags
from data_fixtures import cifar_arrays, write_cifar10_archive

from keras_dml import datasets, models
from keras_dml.cohort.keras_internals import moving_averages
from keras_dml.cohort.peer_optimizers import averaging_optimizer
from keras_dml.datasets import cifar10
from keras_dml.training import config as settings
from keras_dml.training.lock import RunFolderInUse, RunLock
from keras_dml.training.run import check_resume, run, stored_settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _script(*flags_, timeout=600):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "train.py"), *flags_],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


# ------------------------------------------------------------------ settings


def test_every_setting_is_declared_once_and_becomes_one_flag():
    names = [s.name for s in settings.SETTINGS]
    assert len(names) == len(set(names))
    values = settings.define_flags(flags.FlagValues())
    assert sorted(values) == sorted(names)
    text = settings.help_text()
    for name in names:
        assert text.count(f"  --{name}\n") == 1, name
    assert {s.group for s in settings.SETTINGS} == set(settings.GROUPS)


def test_flags_given_override_the_dataset_defaults():
    values = settings.define_flags(flags.FlagValues())
    values(["train.py", "--dataset=market1501", "--lr=0.01", "--lr_milestones=3,5"])
    given = settings.given_settings(values)
    assert given == {"dataset": "market1501", "lr": 0.01, "lr_milestones": (3, 5)}
    config = settings.resolve({**given, "model_dir": "/tmp/x"})
    assert config.lr == 0.01 and config.optimizer == "adam" and config.beta1 == 0.5


@pytest.mark.parametrize("dataset", datasets.NAMES)
def test_every_dml_setting_works_for_every_dataset(dataset):
    given = {
        "dataset": dataset,
        "model_dir": "/tmp/x",
        "kl_weight": 2.0,
        "temperature": 3.0,
        "mimicry": "ensemble",
        "update": "sequential",
        "label_smoothing": 0.2,
        "optimizer": "sgd",
        "momentum": 0.8,
        "nesterov": False,
        "weight_decay": 1e-4,
        "lr_schedule": "cosine",
    }
    config = settings.resolve(given)
    for name, value in given.items():
        assert getattr(config, name) == value, name


def test_the_datasets_supply_the_papers_defaults():
    cifar = settings.resolve({"dataset": "cifar100", "model_dir": "x"})
    assert (cifar.epochs, cifar.batch_size, cifar.lr, cifar.optimizer) == (
        200,
        64,
        0.1,
        "sgd",
    )
    assert cifar.lr_milestones == (60, 120, 180) and cifar.weight_decay == 5e-4
    market = settings.resolve({"dataset": "market1501", "model_dir": "x"})
    assert (market.optimizer, market.lr, market.beta1, market.batch_size) == (
        "adam",
        2e-4,
        0.5,
        16,
    )
    assert market.label_smoothing == 0.1 and market.peers == ("reid_mobilenet",) * 2


def test_invalid_settings_are_all_named():
    with pytest.raises(ValueError) as error:
        settings.resolve(
            {"model_dir": "x", "lr": -1.0, "peers": ("resnet32", "vgg"), "update": "x"}
        )
    message = str(error.value)
    assert "--lr must be a number > 0" in message
    assert "unknown peer 'vgg'" in message
    assert "--update must be one of simultaneous, sequential" in message


def test_mimicry_arguments_are_checked_against_the_method():
    with pytest.raises(ValueError) as error:
        settings.resolve(
            {
                "model_dir": "x",
                "mimicry": "temporal_mean",
                "update": "sequential",
                "refresh_steps": 5,
                "teacher_decay": 1.0,
                "kdcl_variant": "max",
            }
        )
    message = str(error.value)
    assert "--refresh_steps applies to --mimicry=codistillation only" in message
    assert "--kdcl_variant applies to --mimicry=kdcl only" in message
    assert (
        "--kdcl_variant must be one of min_logit, naive, linear, general. "
        "Received: max" in message
    )
    assert "--teacher_decay must be a number in [0, 1). Received: 1.0" in message
    assert "--mimicry=temporal_mean takes --update=simultaneous only" in message
    with pytest.raises(ValueError) as error:
        settings.resolve(
            {"model_dir": "x", "mimicry": "okddip", "peers": ("resnet8", "resnet8")}
        )
    message = str(error.value)
    assert "--mimicry=okddip needs at least 3 peers" in message
    assert "--mimicry=okddip trains the branches of one network" in message
    with pytest.raises(ValueError, match="not with --update=sequential or "):
        settings.resolve(
            {
                "model_dir": "x",
                "peer_distortion": "shift",
                "update": "sequential",
                "mimicry": "codistillation",
            }
        )
    config = settings.resolve(
        {"model_dir": "x", "mimicry": "codistillation", "refresh_steps": 7}
    )
    assert settings.mimicry_arguments(config) == {"refresh_steps": 7}
    assert settings.mimicry_arguments(config.replace(mimicry="kdcl")) == {}


def test_a_methods_flags_are_read_from_its_class():
    # Every flag argument a method's class declares is a setting (no other
    # edit), parsed as declared, shown with the class's default, and checked
    # by the class's own check in the flag's words.
    from keras_dml.cohort import mimicry as methods

    declared = methods.flags()
    assert {flag.flag for _, flag in declared} == set(settings.MIMICRY_ARGUMENTS)
    for method, flag in declared:
        setting = settings.BY_NAME[flag.flag]
        assert (setting.kind, setting.default) == (flag.kind, None)
        assert settings.MIMICRY_ARGUMENTS[flag.flag] == (method, flag.argument)
        default = methods.default_of(method, flag.argument)
        # A default of None is the class's to explain in the flag's help.
        shown = f"; none: {default}" if default is not None else ""
        assert f"(--mimicry={method}{shown}.)" in setting.help
        methods.class_of(method).check_arguments(**{flag.argument: default})
    with pytest.raises(ValueError) as error:
        settings.resolve(
            {"model_dir": "x", "mimicry": "codistillation", "refresh_steps": 0}
        )
    assert str(error.value) == "--refresh_steps must be an integer >= 1. Received: 0"


def test_settings_round_trip_through_config_json(tmp_path):
    config = settings.resolve(
        {"dataset": "folder", "model_dir": str(tmp_path), "image_size": (48, 40)}
    )
    (tmp_path / "config.json").write_text(json.dumps(config.asdict()))
    stored = stored_settings(str(tmp_path))
    assert settings.RunConfig(stored) == settings.RunConfig(config.asdict())
    assert settings.resolve(stored) == config


def test_resume_refusal_names_the_changed_setting(tmp_path):
    config = settings.resolve(
        {"dataset": "digits", "model_dir": str(tmp_path), "seed": 1}
    )
    (tmp_path / "config.json").write_text(json.dumps(config.asdict()))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch-0001.keras").write_bytes(b"")
    with pytest.raises(ValueError, match=r"--temperature: stored 1\.0, given 4\.0"):
        check_resume(config.replace(temperature=4.0))
    # Resumable settings may change.
    assert check_resume(config.replace(epochs=99, verbose=0)).epochs == 99


# ------------------------------------------------------------------ datasets


def _images_folder(root, counts, size=(20, 24)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in counts.items():
        for name in ("cat", "dog"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(
                    folder / f"{i}.{'png' if i % 2 else 'jpg'}"
                )
    return root


def _smoke(tmp_path, **given):
    config = settings.resolve(
        {"model_dir": str(tmp_path / "run"), "seed": 0, "verbose": 0, **given}
    )
    return run(config)


@pytest.mark.slow
def test_folder_dataset_trains_and_resumes_exactly(tmp_path):
    root = _images_folder(tmp_path / "images", {"train": 8, "test": 3})
    given = dict(
        dataset="folder",
        data_dir=str(root),
        peers=("resnet8", "resnet8"),
        image_size=(16, 16),
        batch_size=4,
        epochs=2,
        deterministic=True,
        export=False,
    )
    results = _smoke(tmp_path, **given)
    assert set(results["top1"]) == {"peer0", "peer1", "ensemble"}
    assert results["epochs_completed"] == 2
    # One epoch, then the second as a resumed run: the same weights.
    resumed = _smoke(tmp_path / "b", **{**given, "epochs": 1})
    resumed = _smoke(tmp_path / "b", **given)
    np.testing.assert_allclose(
        [r["loss"] for r in resumed["history"]],
        [r["loss"] for r in results["history"]],
        rtol=1e-6,
    )
    stored = json.loads((tmp_path / "b" / "run" / "classes.json").read_text())
    assert stored == ["cat", "dog"]
    # Renaming a class folder (in both splits) would swap the labels' meaning
    # on resume: refused, naming the classes; nothing is rewritten.
    for split in ("train", "test"):
        (root / split / "cat").rename(root / split / "zebra")
    with pytest.raises(ValueError, match=r"classes \['cat', 'dog'\] .* \['dog', "):
        _smoke(tmp_path / "b", **{**given, "epochs": 3})
    assert json.loads((tmp_path / "b" / "run" / "classes.json").read_text()) == stored


@pytest.mark.slow
def test_a_student_of_a_static_teacher_resumes_exactly(tmp_path):
    """--teacher: a .keras file (a model, or a cohort's peer); one student is
    enough; the teacher is saved unchanged with the cohort and the run
    resumes exactly."""
    teacher = models.build("cnn_wide", 10, (8, 8, 1))
    teacher_path = str(tmp_path / "teacher.keras")
    teacher.save(teacher_path)
    given = dict(
        dataset="digits",
        smoke_test=True,
        peers=("cnn_small",),
        teacher=teacher_path,
        temperature=4.0,
        deterministic=True,
        export=False,
    )
    results = _smoke(tmp_path / "a", **given)
    assert results["run"] == "distillation" and results["peer_names"] == ["cnn_small"]
    saved = keras.saving.load_model(tmp_path / "a" / "run" / "cohort.keras")
    for a, b in zip(saved.teacher.weights, teacher.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), b.numpy())
    _smoke(tmp_path / "b", **{**given, "epochs": 1})
    resumed = _smoke(tmp_path / "b", **given)
    assert [r["loss"] for r in resumed["history"]] == [
        r["loss"] for r in results["history"]
    ]
    # A damaged teacher file is refused before the run folder is written.
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not a readable .keras file"):
        _smoke(tmp_path / "c", **{**given, "teacher": str(damaged)})
    assert not (tmp_path / "c" / "run").exists()
    with pytest.raises(ValueError, match="--teacher must be a .keras file"):
        settings.resolve({**given, "model_dir": "x", "teacher": "t.h5"})
    with pytest.raises(ValueError, match="is not a file"):
        settings.resolve({**given, "model_dir": "x", "teacher": "none.keras"})
    with pytest.raises(ValueError, match=r"needs at least 2 names \(or 1 with"):
        settings.resolve({**given, "model_dir": "x", "teacher": None})


@pytest.mark.slow
def test_a_stateful_mimicry_resumes_exactly(tmp_path):
    """The weight averages are in every checkpoint: one epoch, then the
    second as a resumed run, gives the uninterrupted run's losses and
    averages."""
    given = dict(
        dataset="digits",
        smoke_test=True,
        mimicry="temporal_mean",
        teacher_decay=0.5,
        epochs=2,
        deterministic=True,
        export=False,
    )
    results = _smoke(tmp_path / "a", **given)
    assert results["run"] == "temporal_mean"
    _smoke(tmp_path / "b", **{**given, "epochs": 1})
    resumed = _smoke(tmp_path / "b", **given)
    assert [r["loss"] for r in resumed["history"]] == [
        r["loss"] for r in results["history"]
    ]
    cohorts = [
        keras.saving.load_model(tmp_path / run / "run" / "cohort.keras", compile=False)
        for run in ("a", "b")
    ]
    assert len(cohorts[0].mimicry.weights) > 0
    for a, b in zip(cohorts[0].mimicry.weights, cohorts[1].mimicry.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_branch_cohort_trains_resumes_exactly_and_exports_each_branch(tmp_path):
    """--branch_stages: the peers are branches of one ResNet (ONE's gated
    ensemble here); its trunk, branches and gate are in every checkpoint."""
    given = dict(
        dataset="digits",
        smoke_test=True,
        peers=("resnet8", "resnet8", "resnet8"),
        branch_stages=1,
        mimicry="one",
        temperature=3.0,
        epochs=2,
        deterministic=True,
    )
    results = _smoke(tmp_path / "a", **given)
    assert results["run"] == "one"
    _smoke(tmp_path / "b", **{**given, "epochs": 1, "export": False})
    resumed = _smoke(tmp_path / "b", **given)
    assert [r["loss"] for r in resumed["history"]] == [
        r["loss"] for r in results["history"]
    ]
    cohort = keras.saving.load_model(tmp_path / "a" / "run" / "cohort.keras")
    assert cohort.trunk is not None and len(cohort.branches) == 3
    exported = sorted(os.listdir(tmp_path / "a" / "run" / "export"))
    assert [name for name in exported if "branch" in name] == [
        f"{cohort.trunk.name}_branch{i}" for i in range(3)
    ]


def test_moving_averages_are_what_a_run_evaluates_and_resume_exactly(tmp_path):
    """--ema_decay: cohort.keras holds the averages the last checkpoint keeps
    beside the trained weights, and a run resumed after its first epoch ends
    with the uninterrupted run's losses and averages."""
    given = dict(
        dataset="digits",
        smoke_test=True,
        ema_decay=0.5,
        epochs=2,
        deterministic=True,
        export=False,
    )
    results = _smoke(tmp_path / "a", **given)
    _smoke(tmp_path / "b", **{**given, "epochs": 1})
    resumed = _smoke(tmp_path / "b", **given)
    assert [r["loss"] for r in resumed["history"]] == [
        r["loss"] for r in results["history"]
    ]
    assert resumed["top1"] == results["top1"]
    # Started again when complete, it writes cohort.keras again, with the
    # averages too (what is checked below).
    assert _smoke(tmp_path / "a", **given)["top1"] == results["top1"]
    run_dir = tmp_path / "a" / "run"
    saved = keras.saving.load_model(run_dir / "cohort.keras", compile=False)
    last = keras.saving.load_model(run_dir / "checkpoints" / "epoch-0002.keras")
    resumed_cohort = keras.saving.load_model(
        tmp_path / "b" / "run" / "cohort.keras", compile=False
    )
    for k, opt in enumerate(last.peer_optimizers):
        pairs = moving_averages(averaging_optimizer(opt))
        assert [v.path for v, _ in pairs] == [
            v.path for v in last.peers[k].trainable_variables
        ]
        for (_, average), kept, again in zip(
            pairs,
            saved.peers[k].trainable_variables,
            resumed_cohort.peers[k].trainable_variables,
        ):
            np.testing.assert_array_equal(kept.numpy(), average.numpy())
            np.testing.assert_array_equal(again.numpy(), average.numpy())
        assert any(
            not np.array_equal(trained.numpy(), average.numpy())
            for trained, average in pairs
        )
    with pytest.raises(ValueError, match=r"--ema_decay must be a number in \[0, 1\)"):
        _smoke(tmp_path / "c", **{**given, "ema_decay": 1.0})


def test_kdcl_general_fits_on_held_out_images_and_resumes_exactly(tmp_path):
    """Its weights are refitted after each epoch on --validation_size images,
    before the checkpoint: a run resumed after its first epoch ends with the
    uninterrupted run's losses and weights. Without held-out images it is
    refused (the test set must not fit them). Each peer sees its own
    distortion (--peer_distortion, KDCL's), drawn after the resume as it
    would have been."""
    given = dict(
        dataset="digits",
        smoke_test=True,
        mimicry="kdcl",
        kdcl_variant="general",
        peer_distortion="flip_shift",
        validation_size=30,
        epochs=2,
        deterministic=True,
        export=False,
    )
    with pytest.raises(ValueError, match="give --validation_size > 0"):
        _smoke(tmp_path / "refused", **{**given, "validation_size": 0})
    results = _smoke(tmp_path / "a", **given)
    weights = [
        [row[f"peer{k}_ensemble_weight"] for k in range(2)]
        for row in results["history"]
    ]
    assert all(sum(w) == pytest.approx(1.0, abs=1e-5) for w in weights)
    assert weights[0] != weights[1]
    _smoke(tmp_path / "b", **{**given, "epochs": 1})
    resumed = _smoke(tmp_path / "b", **given)
    assert [r["loss"] for r in resumed["history"]] == [
        r["loss"] for r in results["history"]
    ]
    cohorts = [
        keras.saving.load_model(tmp_path / run / "run" / "cohort.keras", compile=False)
        for run in ("a", "b")
    ]
    np.testing.assert_array_equal(
        cohorts[0].mimicry.ensemble_weights.numpy(),
        cohorts[1].mimicry.ensemble_weights.numpy(),
    )
    assert cohorts[1].peer_distortion.name == "peer_distortion"


def test_folder_errors_name_the_path(tmp_path):
    root = _images_folder(tmp_path / "images", {"train": 2, "test": 1})
    (root / "test" / "dog" / "0.jpg").unlink()
    (root / "test" / "dog").rename(root / "test" / "wolf")
    with pytest.raises(ValueError, match=rf"{root / 'test'}: the class folders differ"):
        _smoke(tmp_path, dataset="folder", data_dir=str(root), batch_size=2)
    assert not (tmp_path / "run").exists()  # Nothing written.
    empty = tmp_path / "empty"
    for split in ("train", "test"):
        (empty / split / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match=f"{empty / 'train' / 'a'} holds no image"):
        _smoke(tmp_path, dataset="folder", data_dir=str(empty), batch_size=2)


def test_image_folders_are_listed_as_keras_lists_them(tmp_path):
    from keras_dml.data import folders

    root = _images_folder(tmp_path / "images", {"train": 2, "test": 1})
    # Nested images count (image_dataset_from_directory finds them); a
    # folder named like an image does not.
    nested = root / "train" / "cat" / "more"
    nested.mkdir()
    (root / "train" / "cat" / "0.jpg").rename(nested / "9.jpg")
    (root / "train" / "dog" / "dir_named.jpg").mkdir()
    split = folders.read_image_folders(root, "train")
    assert [os.path.relpath(p, root) for p in split.paths] == [
        "train/cat/1.png",
        "train/cat/more/9.jpg",
        "train/dog/0.jpg",
        "train/dog/1.png",
    ]
    # An empty class folder in test/ is named (the docstring always said so).
    (root / "test" / "dog" / "0.jpg").unlink()
    with pytest.raises(ValueError, match=f"{root / 'test' / 'dog'} holds no image"):
        folders.read_image_folders(root, "test")
    # A file name that is not UTF-8 is named, not a TensorFlow traceback.
    bad = os.fsencode(root / "test" / "dog") + b"/caf\xe9.jpg"
    open(bad, "wb").write((root / "train" / "dog" / "0.jpg").read_bytes())
    with pytest.raises(ValueError, match=r"b'caf\\xe9.jpg' is not valid UTF-8"):
        folders.read_image_folders(root, "test")


def test_images_padded_after_their_end_are_read(tmp_path):
    import tensorflow as tf

    from keras_dml.data import folders

    root = _images_folder(tmp_path / "images", {"train": 2, "test": 1})
    for name in ("0.jpg", "1.png"):
        path = str(root / "train" / "cat" / name)
        contents = open(path, "rb").read()
        # What some encoders and cameras write after the end marker.
        padded = contents + bytes(range(256)) * 400

        def decoded(data, path=path):
            return folders.decode_file(data, path, (8, 8)).numpy()

        np.testing.assert_array_equal(decoded(padded), decoded(contents))
        # Cut before its end, the same file is named.
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"{path}: not a"):
            decoded(contents[: len(contents) - 20] + bytes(range(256)))


@pytest.mark.slow
def test_a_corrupt_image_is_named(tmp_path):
    import tensorflow as tf

    root = _images_folder(tmp_path / "images", {"train": 4, "test": 1})
    bad = root / "train" / "cat" / "2.jpg"
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=f"{bad}: not a complete JPEG"
    ):
        _smoke(
            tmp_path,
            dataset="folder",
            data_dir=str(root),
            batch_size=4,
            epochs=1,
            peers=("resnet8", "resnet8"),
            image_size=(16, 16),
        )


@pytest.mark.parametrize("kind", ["binary", "python"])
def test_cifar10_reads_both_official_formats(tmp_path, kind):
    images, labels, _ = cifar_arrays(25, seed=3)
    labels = labels % 10
    test_images, test_labels, _ = cifar_arrays(5, seed=4)
    path = write_cifar10_archive(
        tmp_path, kind, (images, labels), (test_images, test_labels % 10)
    )
    read_images, read_labels = cifar10.read_cifar10(path, "train")
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)
    read_images, _ = cifar10.read_cifar10(path, "test")
    np.testing.assert_array_equal(read_images, test_images)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["cifar10", "digits"])
def test_smoke_runs(tmp_path, dataset):
    given = {"dataset": dataset, "smoke_test": True, "export": False}
    if dataset == "cifar10":
        images, labels, _ = cifar_arrays(40, seed=3)
        given["data_dir"] = write_cifar10_archive(
            tmp_path, "python", (images, labels % 10), (images[:20], labels[:20] % 10)
        )
        given["peers"] = ("resnet8", "resnet8")
    results = _smoke(tmp_path, **given)
    assert results["dataset"] == dataset and results["epochs_completed"] == 2
    assert (tmp_path / "run" / "curves.png").is_file()


# ---------------------------------------------------------- the run folder


def test_a_batch_larger_than_the_data_writes_nothing(tmp_path):
    with pytest.raises(
        ValueError, match=r"--batch_size=400 is larger than the training set"
    ):
        _smoke(tmp_path, dataset="digits", batch_size=400)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_second_process_on_a_run_folder_is_refused_at_once(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    with RunLock(str(folder)):
        started = time.perf_counter()
        result = _script("--dataset=digits", f"--model_dir={folder}", "--epochs=1")
        assert result.returncode == 1
        assert (
            f"{folder} is in use by another run (process {os.getpid()}" in result.stderr
        )
        assert time.perf_counter() - started < 60
        assert "Traceback" not in result.stderr  # One line.
    assert not (folder / "config.json").exists()


def test_a_killed_process_leaves_no_stuck_lock(tmp_path):
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from keras_dml.training.lock import RunLock;"
        "lock = RunLock(sys.argv[2]).acquire();"
        "print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, REPO, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunFolderInUse, match=f"process {holder.pid}"):
        RunLock(str(tmp_path)).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    RunLock(str(tmp_path)).acquire().release()


def test_several_workers_need_one_seed_and_one_chief():
    import types

    import tensorflow as tf

    from keras_dml.backends.tensorflow import TensorFlowDevices

    cluster = tf.train.ClusterSpec({"worker": ["host1:1234", "host2:1234"]})
    for index in (0, 1):
        strategy = types.SimpleNamespace(
            num_replicas_in_sync=2,
            cluster_resolver=tf.distribute.cluster_resolver.SimpleClusterResolver(
                cluster, task_type="worker", task_id=index
            ),
        )
        devices = TensorFlowDevices(strategy)
        assert (devices.processes, devices.is_chief) == (2, index == 0)
        with pytest.raises(ValueError, match="--seed is required with 2 workers"):
            devices.check_seed(None)
        devices.check_seed(0)


def test_the_kl_ramp_settings_become_steps_of_the_cohort(tmp_path):
    results = _smoke(
        tmp_path,
        dataset="digits",
        smoke_test=True,
        kl_ramp_up_epochs=1.0,
        kl_burn_in_epochs=0.5,
        kl_ramp_shape="linear",
        export=False,
    )
    assert results["epochs_completed"] == 2
    cohort = keras.saving.load_model(tmp_path / "run" / "cohort.keras")
    steps = results["steps_per_epoch"]
    assert (cohort.kl_ramp_up_steps, cohort.kl_burn_in_steps) == (steps, steps // 2)
    assert cohort.kl_ramp_shape == "linear"
    with pytest.raises(ValueError, match="--kl_ramp_up_epochs must be a number >= 0"):
        settings.resolve(
            {"dataset": "digits", "model_dir": "x", "kl_ramp_up_epochs": -1}
        )
