"""Counting a Keras model's floating-point operations with TF's profiler."""

import tensorflow as tf
from tensorflow.python.profiler import model_analyzer, option_builder


def forward_flops(model, input_shape):
    """FLOPs (2 per multiply-add) of one forward pass on one example."""
    function = tf.function(lambda x: model(x, training=False))
    graph = function.get_concrete_function(
        tf.TensorSpec((1, *input_shape), tf.float32)
    ).graph
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return model_analyzer.profile(graph, options=options).total_float_ops


def training_flops(forward):
    """The usual estimate of a training step: forward + backward = 3x forward."""
    return 3 * forward
