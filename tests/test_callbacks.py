"""EpochSummary: the one line per epoch the training scripts print."""

import keras

from keras_dml.callbacks import EpochSummary


def _line(logs, model=None):
    lines = []
    summary = EpochSummary(3, print_fn=lines.append)
    summary.set_model(model or keras.Sequential([keras.Input((2,))]))
    summary.on_epoch_begin(0)
    summary.on_epoch_end(0, logs)
    (line,) = lines
    return line


def test_test_accuracy_per_peer_in_numeric_order_then_the_ensemble():
    line = _line(
        {
            "loss": 1.5,
            "val_peer10_accuracy": 0.5,
            "val_peer2_accuracy": 0.25,
            "val_peer2_loss": 3.0,
            "val_ensemble_accuracy": 0.75,
            "peer2_accuracy": 0.9,
        }
    )
    assert line.startswith("epoch 1/3: ")
    assert line.endswith(
        "loss 1.5000, test accuracy peer2 25.00%, peer10 50.00%, ensemble 75.00%"
    )


def test_training_accuracy_without_validation_and_the_learning_rate():
    model = keras.Sequential([keras.Input((2,))])
    optimizer = keras.optimizers.SGD(0.05)
    optimizer.optimizers = [optimizer]  # The PeerOptimizers protocol.
    model.optimizer = optimizer
    line = _line({"loss": 0.5, "peer0_accuracy": 0.5}, model=model)
    assert line.endswith("loss 0.5000, train accuracy peer0 50.00%, lr 0.05")
