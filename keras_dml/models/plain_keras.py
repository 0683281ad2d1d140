"""A peer made of Keras's own layers only: it loads in any Keras 3, without
keras_dml installed.

The peers keras_dml builds use three layers of its own, each for speed on
TensorFlow or to fit several backbones to one pipeline, and the networks
are `keras.Model` subclasses registered by keras_dml; a `.keras` file of
one names those classes, and Keras cannot load it where keras_dml is not
imported. `plain_keras(peer)` re-creates the peer from built-in layers
with the same weights and the same outputs:

- `FusedBatchNormalization` -> `keras.layers.BatchNormalization` (same
  config and weights; Keras's own computation of the same function);
- `ZeroPadShortcut` -> a frozen 1x1 `Conv2D` whose kernel copies each input
  channel to its padded place (what the layer computes on TensorFlow);
- `BackboneInput` -> `keras.layers.Rescaling` with per-channel scale and
  offset (and, for Caffe's BGR order, a frozen 1x1 `Conv2D` that reverses
  the channels first);
- the model itself -> a functional `keras.Model` of the same name, inputs
  and outputs.
"""

import keras
import numpy as np
from keras import layers

from keras_dml.models.batch_norm import FusedBatchNormalization
from keras_dml.models.reid import BackboneInput
from keras_dml.models.resnet_cifar import ZeroPadShortcut, shortcut_kernel


def plain_keras(peer):
    """A copy of the functional `peer` made only of Keras's own layers, with
    the same weights and outputs (to float32 rounding: the same bits on
    TensorFlow but for BatchNormalization's summation order).

    Use it wherever a peer leaves keras_dml: `.save()` the copy and any
    Keras 3 loads it, `keras.saving.load_model("peer0.keras")`, with no
    `custom_objects`. A peer already made of Keras layers (keras-hub,
    `keras.applications`) comes back as an equal functional copy.

    Example:

    ```python
    model.fit(...)
    keras_dml.models.plain_keras(model.peers[0]).save("peer0.keras")
    ```

    Raises ValueError for a subclassed peer (a `call` of its own): there is
    no graph of layers to rebuild.
    """
    if not isinstance(peer, keras.Model) or not hasattr(peer, "_nodes_by_depth"):
        raise ValueError(
            "`plain_keras` rebuilds a functional model (built from "
            "`keras.Input`, as keras_dml's, keras-hub's and "
            f"`keras.applications`' peers are). Received: {peer!r}"
        )
    copies = []

    def clone(layer):
        copy = _plain_layer(layer)
        copies.append((layer, copy))
        return copy

    # `input` and `output` keep the peer's structures (one tensor, a dict).
    graph = keras.Model(peer.input, peer.output, name=peer.name)
    copy = keras.models.clone_model(graph, clone_function=clone, recursive=True)
    for layer, plain in copies:
        _copy_weights(layer, plain)
    return copy


def _plain_layer(layer):
    common = {"name": layer.name, "dtype": layer.dtype_policy}
    if isinstance(layer, FusedBatchNormalization):
        return layers.BatchNormalization.from_config(layer.get_config())
    if isinstance(layer, ZeroPadShortcut):
        return layers.Conv2D(
            layer.filters,
            1,
            strides=layer.strides,
            padding="valid",
            use_bias=False,
            trainable=False,
            **common,
        )
    if isinstance(layer, BackboneInput):
        scale, offset = layer._scale, layer._offset
        if layer.mode == "tf":
            return layers.Rescaling(scale.tolist(), offset.tolist(), **common)
        # flip(x * s + o) == flip(x) * flip(s) + flip(o), exactly.
        return keras.Sequential(
            [
                layers.Conv2D(
                    3,
                    1,
                    use_bias=False,
                    trainable=False,
                    name="bgr",
                    dtype=common["dtype"],
                ),
                layers.Rescaling(
                    scale[::-1].tolist(),
                    offset[::-1].tolist(),
                    name="scale",
                    dtype=common["dtype"],
                ),
            ],
            name=layer.name,
        )
    if type(layer).__module__.startswith("keras_dml"):
        raise ValueError(
            f"Layer {layer.name!r} is keras_dml's {type(layer).__name__}, which "
            "`plain_keras` has no Keras equivalent for."
        )
    return layer.__class__.from_config(layer.get_config())


def _copy_weights(layer, plain):
    if isinstance(layer, ZeroPadShortcut):
        plain.kernel.assign(shortcut_kernel(plain.kernel.shape[2], layer.filters))
    elif isinstance(layer, BackboneInput):
        if layer.mode != "tf":
            reverse = np.eye(3, dtype="float32")[::-1].reshape(1, 1, 3, 3)
            plain.layers[0].kernel.assign(reverse)
    else:
        plain.set_weights(layer.get_weights())
