"""Named input normalizations, shared by the pipelines and the exported models
(a served model must preprocess exactly as training did)."""

import tensorflow as tf

# name -> (mean, std) per channel, for pixels scaled to [0, 1].
NORMALIZATIONS = {
    # CIFAR-100's own statistics.
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    # torchvision's ImageNet statistics, as torchreid and fast-reid use.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # keras.applications MobileNet's [-1, 1] scaling.
    "mobilenet": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    # Pixels scaled to [0, 1].
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    # Float pixels in 0..255, for models that preprocess themselves.
    "none": ((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255)),
}


def check_normalization(name):
    if name not in NORMALIZATIONS:
        raise ValueError(
            f"Unknown normalization {name!r}. Valid names: {', '.join(NORMALIZATIONS)}"
        )
    return NORMALIZATIONS[name]


def for_channels(mean, std, channels):
    """`(mean, std)` for images of `channels` channels: a normalization that
    is the same for every channel ("unit", "none", "mobilenet") follows the
    images; any other is returned as it is, for the caller to check."""
    if len(set(mean)) == 1 and len(set(std)) == 1:
        return (mean[0],) * channels, (std[0],) * channels
    return mean, std


def normalize(images, mean, std):
    """uint8 (or 0..255 float) images -> float32 `(x / 255 - mean) / std`."""
    images = tf.cast(images, tf.float32) / 255.0
    return (images - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
