"""Keras habits on a cohort: monitoring callbacks on every logged name,
`learning_rate` in the history, `model.export`, peers that return
probabilities, class counts, the backend, and the compact progress bar."""

import inspect
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dml
from keras_dml.cohort import fit_callbacks, keras_internals, progress
from keras_dml.cohort.progress import CohortProgbar
from tests.helpers import NUM_CLASSES, NUM_FEATURES, data, dense_peer


def _cohort(metrics=("accuracy",), optimizer=None):
    model = keras_dml.MutualLearningModel([dense_peer(1), dense_peer(3)])
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.1), metrics=list(metrics)
    )
    return model


MONITORED = [
    ("val_peer0_accuracy", "max"),
    ("val_peer1_accuracy", "max"),
    ("val_ensemble_accuracy", "max"),
    ("val_loss", "min"),
    ("val_peer0_loss", "min"),
    ("val_peer1_ce", "min"),
    ("val_peer0_kl", "min"),
    ("peer0_accuracy", "max"),
    # A metric the user passes to compile, per peer and for the ensemble.
    ("val_peer0_top3", "max"),
    ("val_ensemble_crossentropy", "min"),
]


def _callbacks(monitor, tmp_path):
    return {
        "EarlyStopping": keras.callbacks.EarlyStopping(monitor=monitor, patience=10),
        "ModelCheckpoint": keras.callbacks.ModelCheckpoint(
            str(tmp_path / "best.weights.h5"),
            monitor=monitor,
            save_best_only=True,
            save_weights_only=True,
        ),
        "ReduceLROnPlateau": keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, patience=10
        ),
    }


@pytest.mark.parametrize("monitor,mode", MONITORED)
def test_monitoring_callbacks_know_the_direction_of_every_cohort_log(
    monitor, mode, tmp_path
):
    model = _cohort(
        metrics=[
            "accuracy",
            keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3"),
            "crossentropy",
        ]
    )
    x, y = data(32)
    # EarlyStopping, ModelCheckpoint and ReduceLROnPlateau, in one fit.
    callbacks = _callbacks(monitor, tmp_path)
    model.fit(
        x,
        y,
        validation_data=(x, y),
        epochs=2,
        callbacks=list(callbacks.values()),
        verbose=0,
    )
    for kind, callback in callbacks.items():
        assert callback.mode == mode, kind
        expected = keras.ops.greater if mode == "max" else keras.ops.less
        assert callback.monitor_op is expected, kind
    assert (tmp_path / "best.weights.h5").is_file()


def test_early_stopping_restores_the_best_peer_accuracy_weights():
    model = _cohort()
    x, y = data(32)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_ensemble_accuracy", patience=1, restore_best_weights=True
    )
    history = model.fit(
        x, y, validation_data=(x, y), epochs=3, callbacks=[stop], verbose=0
    )
    assert "val_ensemble_accuracy" in history.history


def test_a_metric_without_a_direction_still_asks_for_mode():
    def agreement(y_true, y_pred):
        return keras.ops.max(y_pred, axis=-1)

    model = _cohort(metrics=[agreement])
    x, y = data(16)
    stop = keras.callbacks.EarlyStopping(monitor="val_peer0_agreement")
    with pytest.raises(ValueError, match="mode='max'"):
        model.fit(x, y, validation_data=(x, y), epochs=1, callbacks=[stop], verbose=0)


def test_keras_metric_direction_attribute_is_where_we_read_it():
    # fit_callbacks.metric_direction reads Keras's private `_direction`.
    assert (
        fit_callbacks.metric_direction(keras.metrics.SparseCategoricalAccuracy())
        == "max"
    )
    assert fit_callbacks.metric_direction(keras.metrics.MeanSquaredError()) == "min"


@pytest.mark.parametrize(
    "callback",
    [
        keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1)),
        keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5),
    ],
    ids=["LearningRateScheduler", "ReduceLROnPlateau"],
)
def test_history_has_learning_rate_as_in_plain_keras(callback, tmp_path):
    model = _cohort()
    x, y = data(32)
    csv = keras.callbacks.CSVLogger(str(tmp_path / "log.csv"))
    history = model.fit(x, y, epochs=3, callbacks=[callback, csv], verbose=0)
    rates = history.history["learning_rate"]
    assert len(rates) == 3
    # The last epoch's rate is the optimizers' rate after it.
    final = keras.ops.convert_to_numpy(model.peer_optimizers[0].learning_rate)
    assert rates[-1] == pytest.approx(float(final))
    # One rate for the cohort: no per-peer keys beside it.
    assert not [k for k in history.history if k.startswith("learning_rate_")]
    assert "learning_rate" in (tmp_path / "log.csv").read_text().splitlines()[0]


def test_learning_rate_scheduler_values_are_logged():
    model = _cohort()
    x, y = data(32)
    scheduler = keras.callbacks.LearningRateScheduler(
        lambda epoch, lr: 0.1 / (epoch + 1)
    )
    history = model.fit(x, y, epochs=3, callbacks=[scheduler], verbose=0)
    np.testing.assert_allclose(history.history["learning_rate"], [0.1, 0.05, 0.1 / 3])


def test_different_peer_rates_keep_their_keys_beside_learning_rate():
    model = keras_dml.MutualLearningModel([dense_peer(1), dense_peer(3)])
    model.compile(optimizer=[keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.02)])
    x, y = data(32)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=5)
    history = model.fit(x, y, epochs=1, callbacks=[plateau], verbose=0)
    names = [opt.name for opt in model.peer_optimizers]
    assert history.history["learning_rate"] == pytest.approx([0.1])
    assert history.history[f"learning_rate_{names[1]}"] == pytest.approx([0.02])


def test_model_export_after_fit_and_predict(tmp_path):
    model = _cohort()
    x, y = data(32)
    model.fit(x, y, epochs=1, verbose=0)
    expected = model.predict(x, verbose=0)
    model.export(str(tmp_path / "cohort"))
    loaded = tf.saved_model.load(str(tmp_path / "cohort"))
    served = loaded.serve(tf.constant(x))
    assert len(served) == 2
    for a, b in zip(served, expected):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-5, atol=1e-6)


def test_model_export_of_peers_without_an_input(tmp_path):
    def peer():
        return keras.Sequential(
            [keras.layers.Dense(8), keras.layers.Dense(NUM_CLASSES)]
        )

    model = keras_dml.MutualLearningModel([peer(), peer()])
    model.compile("sgd")
    x, y = data(16)
    model.fit(x, y, epochs=1, verbose=0)
    model.export(str(tmp_path / "cohort"))
    loaded = tf.saved_model.load(str(tmp_path / "cohort"))
    served = loaded.serve(tf.constant(x))
    assert [tuple(z.shape) for z in served] == [(16, NUM_CLASSES)] * 2


def _application(**kwargs):
    return keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), weights=None, classes=NUM_CLASSES, alpha=0.35, **kwargs
    )


def test_keras_applications_peer_with_softmax_is_refused_by_name():
    with pytest.raises(
        ValueError, match=r"Peer 0 \('mobilenetv2.*softmax.*classifier_activation=None"
    ):
        keras_dml.MutualLearningModel([_application(), _application()])
    keras_dml.MutualLearningModel(
        [
            _application(classifier_activation=None),
            _application(classifier_activation=None),
        ]
    )


@pytest.mark.parametrize(
    "last",
    [
        lambda: keras.layers.Dense(NUM_CLASSES, activation="softmax"),
        lambda: keras.layers.Softmax(),
        lambda: keras.layers.Activation("softmax"),
        lambda: keras.layers.Dense(NUM_CLASSES, activation="sigmoid"),
    ],
    ids=["dense_softmax", "softmax_layer", "activation_layer", "sigmoid"],
)
def test_peers_ending_in_probabilities_are_refused(last):
    inputs = keras.Input((NUM_FEATURES,))
    x = keras.layers.Dense(NUM_CLASSES)(inputs)
    probabilities = keras.Model(inputs, last()(x), name="probs")
    sequential = keras.Sequential(
        [keras.Input((NUM_FEATURES,)), keras.layers.Dense(NUM_CLASSES), last()],
        name="seq",
    )
    for bad in (probabilities, sequential):
        with pytest.raises(ValueError, match=f"Peer 1 \\({bad.name!r}\\) ends in a"):
            keras_dml.MutualLearningModel([dense_peer(1), bad])


def test_a_nested_softmax_model_is_refused():
    inputs = keras.Input((32, 32, 3))
    wrapper = keras.Model(inputs, _application()(inputs), name="wrapper")
    with pytest.raises(ValueError, match="'wrapper'.*softmax"):
        keras_dml.MutualLearningModel(
            [wrapper, _application(classifier_activation=None)]
        )


# Each private Keras attribute keras_dml reads is behind one function of
# keras_internals; these fail by name when a Keras release changes one.


def test_keras_tensor_producer_is_where_we_read_it():
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2)
    assert keras_internals.keras_tensor_producer(dense(inputs)) is dense
    assert keras_internals.keras_tensor_producer(np.zeros(3)) is None


def test_all_layers_reaches_into_nested_models():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="inner")])
    inputs = keras.Input((3,))
    outer = keras.Model(inputs, keras.layers.Dense(2, name="outer")(inner(inputs)))
    names = {layer.name for layer in keras_internals.all_layers(outer)}
    assert {"inner", "outer", inner.name} <= names


def test_optimizer_built_for_lists_the_variables_it_was_built_for():
    peer = dense_peer(1)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(peer.trainable_variables)
    assert [id(v) for v in keras_internals.optimizer_built_for(optimizer)] == [
        id(v) for v in peer.trainable_variables
    ]


def test_moving_averages_pairs_each_variable_with_its_average():
    peer = dense_peer(1)
    optimizer = keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5)
    optimizer.build(peer.trainable_variables)
    pairs = keras_internals.moving_averages(optimizer)
    assert [id(v) for v, _ in pairs] == [id(v) for v in peer.trainable_variables]
    assert [tuple(a.shape) for _, a in pairs] == [
        tuple(v.shape) for v in peer.trainable_variables
    ]


def test_explicit_strategy_is_none_outside_any_scope():
    outside = dense_peer(1)
    assert keras_internals.explicit_strategy(outside) is None
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        inside = dense_peer(2)
    assert keras_internals.explicit_strategy(inside) is strategy


def test_in_multi_worker_mode_is_false_for_one_local_worker():
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert keras_internals.in_multi_worker_mode(strategy) is False


def test_current_stateless_scope_is_the_innermost_one():
    assert keras_internals.current_stateless_scope() is None
    with keras.StatelessScope() as outer:
        assert keras_internals.current_stateless_scope() is outer
        with keras.StatelessScope() as inner:
            assert keras_internals.current_stateless_scope() is inner


def test_the_symbolic_build_hook_still_exists_with_its_arguments():
    hook = getattr(keras.Model, keras_internals.SYMBOLIC_BUILD_HOOK)
    parameters = inspect.signature(hook).parameters
    assert tuple(parameters)[1:] == keras_internals.SYMBOLIC_BUILD_ARGUMENTS
    # The cohort's override is what fit calls.
    calls = []
    model = _cohort()
    original = type(model)._maybe_symbolic_build

    def spy(self, iterator=None, data_batch=None):
        calls.append(True)
        return original(self, iterator=iterator, data_batch=data_batch)

    model._maybe_symbolic_build = spy.__get__(model)
    x, y = data(8)
    model.fit(x, y, epochs=1, verbose=0)
    assert calls


def test_sequential_peers_with_other_class_counts_are_refused_when_built():
    def sequential(num_classes, with_input):
        layers = [keras.layers.Dense(8), keras.layers.Dense(num_classes)]
        return keras.Sequential(
            ([keras.Input((NUM_FEATURES,))] if with_input else []) + layers
        )

    with pytest.raises(ValueError, match="same number of classes.*4.*5"):
        keras_dml.MutualLearningModel([sequential(4, True), sequential(5, True)])
    model = keras_dml.MutualLearningModel([sequential(4, False), sequential(5, False)])
    with pytest.raises(ValueError, match="same number of classes.*4.*5"):
        model.build((None, NUM_FEATURES))


def test_other_backends_are_refused_by_name(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "numpy")
    with pytest.raises(
        RuntimeError, match="TensorFlow, JAX and PyTorch backends.*'numpy'.*KERAS_"
    ):
        keras_dml.MutualLearningModel([dense_peer(1), dense_peer(3)])


# ------------------------------------------------------------------ progress


def test_fit_prints_one_line_per_epoch_in_keras_format_to_a_file(capsys):
    model = _cohort()
    x, y = data(32)
    model.fit(x, y, validation_data=(x, y), epochs=2, batch_size=16, verbose=1)
    out = capsys.readouterr().out
    assert "\r" not in out  # Not a terminal: nothing is redrawn.
    lines = out.splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2" and len(lines) == 4
    for line in lines[1], lines[3]:
        assert line.startswith("2/2 ━━━━━━━━━━━━ ")
        for entry in (
            " - loss: ",
            " - accuracy: peer0 ",
            ", peer1 ",
            ", ensemble ",
            " - val_loss: ",
            " - val_accuracy: peer0 ",
        ):
            assert entry in line, line


@pytest.mark.parametrize("columns", [40, 80, 200])
def test_on_a_terminal_every_redraw_fits_its_width(capsys, monkeypatch, columns):
    monkeypatch.setattr(
        progress.shutil,
        "get_terminal_size",
        lambda fallback=None: os.terminal_size((columns, 24)),
    )
    model = _cohort()
    x, y = data(64)
    bar = CohortProgbar()
    bar._dynamic = True  # As on a terminal.
    model.fit(
        x, y, validation_data=(x, y), epochs=2, batch_size=8, callbacks=[bar], verbose=1
    )
    out = capsys.readouterr().out
    drawn = [part for part in re.split(r"[\r\n]", out) if part.strip()]
    assert len(drawn) > 4
    assert max(len(part) for part in drawn) < columns
    # Mid-epoch lines too: the count and timing, then " - " and the values.
    assert all(" - loss:" in part for part in drawn if "/step" in part)
    epoch_lines = out.split("\n")
    final = epoch_lines[1].split("\r")[-1]
    if columns == 200:  # Room for every name, on one line.
        assert "accuracy: peer0 " in final and "val_accuracy: peer0 " in final
        assert epoch_lines[2] == "Epoch 2/2"
    else:  # Shorter: validation on a line of its own (at 40, cut short).
        assert " - loss:" in final and "val_" not in final
        assert epoch_lines[2].strip().startswith("val_loss:")
    if columns == 80:
        assert "acc: " in final


def test_a_transient_bar_leaves_only_what_the_caller_prints(capsys):
    model = _cohort()
    x, y = data(32)
    in_file = CohortProgbar(transient=True)
    model.fit(x, y, epochs=2, batch_size=16, callbacks=[in_file], verbose=1)
    assert capsys.readouterr().out == ""
    on_terminal = CohortProgbar(transient=True)
    on_terminal._dynamic = True
    model.fit(x, y, epochs=2, batch_size=16, callbacks=[on_terminal], verbose=1)
    out = capsys.readouterr().out
    assert "\n" not in out and "Epoch 2/2 " in out
    assert out.endswith("\r") and out.split("\r")[-2].strip() == ""  # Erased.


def test_keras_progress_bar_on_request(capsys):
    model = _cohort()
    x, y = data(32)
    model.fit(x, y, epochs=1, callbacks=[keras.callbacks.ProgbarLogger()], verbose=1)
    assert "peer0_kl" in capsys.readouterr().out


def test_verbose_zero_prints_nothing_and_history_keeps_every_term(capsys):
    model = _cohort()
    x, y = data(32)
    history = model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert capsys.readouterr().out == ""
    for key in ("peer0_ce", "peer1_kl", "val_peer1_loss", "val_ensemble_accuracy"):
        assert key in history.history


def test_progbar_entries_without_metrics_show_each_peers_loss():
    bar = CohortProgbar()
    logs = {
        "loss": 2.0,
        "peer0_loss": 1.0,
        "peer0_ce": 1.0,
        "peer0_kl": 0.0,
        "peer1_loss": 1.0,
    }
    assert bar._entries(logs, "") == [
        "loss: 2.0000",
        "peer_loss: peer0 1.0000, peer1 1.0000",
    ]
    assert bar._entries(logs, "", level=1) == [
        "loss: 2.000",
        "peer_loss: p0 1.000, p1 1.000",
    ]
