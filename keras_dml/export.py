"""Exporting a trained cohort for TF Serving: one SavedModel per peer, and one
for the ensemble, in the `<model name>/<version>/` layout TF Serving expects.

Each SavedModel takes raw pixels (uint8 `images` [batch, H, W, C]) and does the
training-time normalization in its graph, so a client sends images as they
are. Signatures:

- `serving_default`: `probabilities` (float32 [batch, num_classes]),
  `classes` (int64 [batch]) and `logits` (float32; for the ensemble, the log
  of the averaged probabilities, which are logits of the same softmax).
- `embed` (peers that return an "embedding", e.g. re-ID peers): `embedding`
  (float32 [batch, dim]); the ensemble's is the concatenation of its peers',
  as the DML re-ID evaluation uses.
"""

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf

from keras_dml.backends import runtime
from keras_dml.checks import check_number
from keras_dml.cohort.mimicry import TemporalMean, name_of
from keras_dml.cohort.mutual_learning import MutualLearningModel, split_peer_output
from keras_dml.data.normalization import check_normalization, for_channels, normalize
from keras_dml.files import atomic_write_text, remove_stale_temporaries, umask

ENSEMBLE = "ensemble"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _peers_of(model):
    if isinstance(model, MutualLearningModel):
        return list(model.peers)
    if (
        isinstance(model, (list, tuple))
        and model
        and all(isinstance(p, keras.Model) for p in model)
    ):
        return list(model)
    raise ValueError(
        "`model` must be a keras_dml.MutualLearningModel or a list of Keras models. "
        f"Received: {type(model).__name__}"
    )


def peers_preprocessing(model, default="cifar100"):
    """The normalization name the peers of `model` (a cohort or a list of
    peers) were trained with: their `preprocessing` attribute (the re-ID
    peers have one), else `default` (what the CIFAR peers train on).

    Raises:
        ValueError: the peers name different normalizations.
    """
    names = {getattr(peer, "preprocessing", default) for peer in _peers_of(model)}
    if len(names) > 1:
        raise ValueError(
            f"The peers name different input normalizations {sorted(names)}"
        )
    return names.pop()


def recorded_preprocessing(model_path, record="normalization.json"):
    """The normalization a run recorded beside its cohort (`model_path` is
    `<run>/cohort.keras` or `<run>/checkpoints/epoch-N.keras`): a name or a
    `(mean, std)` pair, or None when there is no record (runs of keras_dml
    before 0.4, or a cohort saved by hand).

    Raises:
        ValueError: the record is unreadable.
    """
    folder = os.path.dirname(os.path.abspath(model_path))
    for candidate in (folder, os.path.dirname(folder)):
        path = os.path.join(candidate, record)
        if not os.path.exists(path):
            continue
        try:
            with open(path) as f:
                stored = json.load(f)
            if "name" in stored:
                return str(stored["name"])
            return (tuple(map(float, stored["mean"])), tuple(map(float, stored["std"])))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path} is unreadable ({error})") from None
    return None


def folder_names(peers):
    """A folder (= TF Serving model) name per peer: the peer's name made safe
    (letters, digits, `_.-`); prefixed with `peer{i}_` when two would collide
    or one would take the ensemble's name."""
    names = [_UNSAFE.sub("_", p.name).strip("._") or "peer" for p in peers]
    if len(set(names)) < len(names) or ENSEMBLE in names:
        names = [f"peer{i}_{n}" for i, n in enumerate(names)]
    return names


def _image_shape(peers, image_shape):
    if image_shape is not None:
        shape = tuple(image_shape)
    else:
        try:
            shape = tuple(peers[0].inputs[0].shape[1:])
        except (AttributeError, ValueError, TypeError, IndexError):
            shape = ()
    if len(shape) != 3 or any(not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(
            "Exported models take images [batch, height, width, channels]; pass "
            "`image_shape=(height, width, channels)` when the peers' input shape "
            f"is not known. Received: image_shape={image_shape!r} (peer input "
            f"shape {shape})"
        )
    return shape


def _normalization(preprocessing):
    """(mean, std) from a name in NORMALIZATIONS or an explicit pair."""
    if isinstance(preprocessing, str):
        return check_normalization(preprocessing)
    try:
        mean, std = (tuple(float(v) for v in part) for part in preprocessing)
    except (TypeError, ValueError):
        raise ValueError(
            "`preprocessing` must be a normalization name or a (mean, std) pair of "
            f"per-channel sequences. Received: preprocessing={preprocessing!r}"
        ) from None
    return mean, std


def _outputs(peer, inputs):
    output = peer(inputs, training=False)
    logits, _ = split_peer_output(output, peer.name)
    embedding = output.get("embedding") if isinstance(output, dict) else None
    return tf.cast(logits, tf.float32), embedding


def _output_sizes(peers, shape):
    """(number of classes, summed embedding size or None), for the empty
    outputs of an empty batch."""
    logits, embedding_size = None, 0
    for peer in peers:
        try:
            output = peer.compute_output_spec(keras.KerasTensor((1, *shape)))
        except Exception:  # A peer that cannot tell without running.
            output = peer(tf.zeros((1, *shape)), training=False)
        logits, _ = split_peer_output(output, peer.name)
        embedding = output.get("embedding") if isinstance(output, dict) else None
        if embedding is None:
            embedding_size = None
        elif embedding_size is not None:
            embedding_size += embedding.shape[-1]
    return logits.shape[-1], embedding_size


def _has_embedding(peer):
    try:
        return isinstance(peer.output, dict) and "embedding" in peer.output
    except (AttributeError, ValueError):
        return False


def _classification(probabilities, logits):
    return {
        "probabilities": probabilities,
        "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
        "logits": logits,
    }


def _archive(peers, shape, mean, std, ensemble):
    """An ExportArchive serving one peer, or the mean of several."""
    archive = keras.export.ExportArchive()
    for peer in peers:
        archive.track(peer)
    num_classes, embedding_size = _output_sizes(peers, shape)
    images_spec = [tf.TensorSpec((None, *shape), tf.uint8, name="images")]

    expected = f"images must be uint8 [batch, {', '.join(map(str, shape))}]"

    def preprocess(images):
        # A loaded signature does not enforce its static shape, and ops traced
        # for 32x32x3 may crash the server on other shapes: check first, and
        # make everything else wait for the check. The shape is padded to
        # rank 4 before it is compared, so that an image of another rank gets
        # this message too, not "Incompatible shapes".
        received = tf.shape(images)
        padded = tf.concat([received, tf.fill([4], -1)], axis=0)[:4]
        matches = tf.logical_and(
            tf.equal(tf.size(received), 4),
            tf.reduce_all(tf.equal(padded[1:], tf.constant(shape, tf.int32))),
        )
        check = tf.debugging.Assert(
            matches, [tf.strings.format(f"{expected}; received shape {{}}", received)]
        )
        with tf.control_dependencies([check]):
            images = tf.identity(images)
        return normalize(images, mean, std)

    def if_not_empty(images, compute, empty):
        # TF Serving forwards empty batches; the convolutions refuse them.
        return tf.cond(tf.shape(images)[0] > 0, compute, empty)

    def serve(images):
        inputs = preprocess(images)

        def compute():
            logits = [_outputs(peer, inputs)[0] for peer in peers]
            if not ensemble:
                return _classification(tf.nn.softmax(logits[0]), logits[0])
            probabilities = tf.add_n([tf.nn.softmax(z) for z in logits]) / len(logits)
            # log(mean probabilities): softmax of these "logits" is the mean again.
            return _classification(probabilities, tf.math.log(probabilities + 1e-30))

        def empty():
            none = tf.zeros([0, num_classes], tf.float32)
            return _classification(none, none)

        return if_not_empty(images, compute, empty)

    def embed(images):
        inputs = preprocess(images)

        def compute():
            embeddings = [
                tf.cast(_outputs(peer, inputs)[1], tf.float32) for peer in peers
            ]
            return {"embedding": tf.concat(embeddings, axis=-1)}

        def empty():
            return {"embedding": tf.zeros([0, embedding_size], tf.float32)}

        return if_not_empty(images, compute, empty)

    archive.add_endpoint("serving_default", serve, input_signature=images_spec)
    if all(_has_embedding(p) for p in peers):
        archive.add_endpoint("embed", embed, input_signature=images_spec)
    return archive


def _check_version(version):
    check_number(
        "`version`", version, 1, integer=True, why=" (TF Serving loads version folders)"
    )


def export_peers(
    model,
    export_dir,
    *,
    version=1,
    include_ensemble=True,
    preprocessing="cifar100",
    image_shape=None,
    overwrite=False,
    use_averaged=False,
):
    """Writes each peer (and the ensemble) as a SavedModel for TF Serving.

    Args:
        model: a `MutualLearningModel` (or a list of peer models).
        export_dir: the TF Serving model base folder; created if missing.
        version: the version folder to write (a positive integer).
        include_ensemble: also write `ensemble/<version>/` (mean of the peers'
            probabilities).
        preprocessing: the normalization used in training: a name from
            `keras_dml.data.normalization.NORMALIZATIONS` ("cifar100",
            "imagenet", "mobilenet", "unit", "none"), or a `(mean, std)` pair
            of per-channel values for pixels scaled to [0, 1].
        image_shape: `(height, width, channels)`; read from the peers when None.
        overwrite: replace existing version folders instead of raising.
        use_averaged: export the peers' weight averages instead of the peers
            (a cohort trained with `mimicry="temporal_mean"`; the averages
            are often the better models). The peers keep their own weights.

    Returns:
        A dict from model name (the folder under `export_dir`) to the written
        version folder. `export_dir/models.config` then lists every model in
        `export_dir` for TF Serving's `--model_config_file`.

    Raises:
        FileExistsError: a version folder exists and `overwrite` is False.
            Nothing is written then.

    All SavedModels are first written to temporary folders beside their final
    place and renamed into place only once all are written, so a failed export
    leaves no half-written version folder (TF Serving ignores the temporary
    folders: their names are not numbers).

    Example:

    ```python
    keras_dml.export.export_peers(model, "/models", version=1)
    # /models/resnet32/1, /models/resnet32_1/1, /models/ensemble/1
    ```

    On JAX or PyTorch the export runs in a TensorFlow child process on a
    saved copy of the model (`keras_dml.export_process`): TensorFlow must be
    installed, as it is with keras_dml.
    """
    if not runtime().exports_in_process:
        # Lazy: export_process's child imports this module (a cycle at load).
        from keras_dml.export_process import export_in_tensorflow

        return export_in_tensorflow(
            model,
            export_dir,
            version=version,
            include_ensemble=include_ensemble,
            preprocessing=preprocessing,
            image_shape=image_shape,
            overwrite=overwrite,
            use_averaged=use_averaged,
        )
    _check_version(version)
    peers = _peers_of(model)
    weights = _weights_to_export(model, use_averaged)
    mean, std = _normalization(preprocessing)
    shape = _image_shape(peers, image_shape)
    if isinstance(preprocessing, str):  # Named: one value for all channels follows.
        mean, std = for_channels(mean, std, shape[-1])
    if len(mean) != shape[-1] or len(std) != shape[-1]:
        raise ValueError(
            f"`preprocessing` gives {len(mean)} channel means and {len(std)} stds "
            f"for images with {shape[-1]} channels."
        )
    jobs = [([peer], name, False) for peer, name in zip(peers, folder_names(peers))]
    if include_ensemble:
        jobs.append((peers, ENSEMBLE, True))
    targets = {
        name: os.path.join(export_dir, name, str(version)) for _, name, _ in jobs
    }
    existing = [path for path in targets.values() if os.path.exists(path)]
    if existing and not overwrite:
        raise FileExistsError(
            f"Version folders already exist: {existing}. Export another `version`, "
            "or pass overwrite=True (--overwrite) to replace them."
        )

    staged = {}
    try:
        with weights:
            for members, name, ensemble in jobs:
                parent = os.path.dirname(targets[name])
                os.makedirs(parent, exist_ok=True)
                # What a killed export left (its `.tmp-<version>-*` staging
                # folders): TF Serving ignores them, but they hold a model each.
                remove_stale_temporaries(parent, depth=1)
                staged[name] = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=parent)
                archive = _archive(members, shape, mean, std, ensemble)
                _write_out(archive, staged[name])
                # mkdtemp makes the folder private (0700); a server running as
                # another user must be able to read it, as any folder made here.
                os.chmod(staged[name], 0o777 & ~umask())
        for name, path in staged.items():
            _replace(path, targets[name])
    finally:
        for path in staged.values():
            shutil.rmtree(path, ignore_errors=True)
    write_model_config(export_dir)
    return targets


def _weights_to_export(model, use_averaged):
    """A context in which the peers hold the weights to export."""
    if not use_averaged:
        return contextlib.nullcontext()
    mimicry = getattr(model, "mimicry", None)
    if not isinstance(mimicry, TemporalMean):
        method = "none (a list of peers)" if mimicry is None else name_of(mimicry)
        raise ValueError(
            "use_averaged=True (--use_averaged) exports the weight averages that "
            "mimicry='temporal_mean' keeps; this cohort's mimicry is "
            f"{method}, which keeps none."
        )
    return mimicry.peers_as_copies(model.peers)


def write_model_config(export_dir, container_dir="/models"):
    """Writes `export_dir/models.config`: a TF Serving `model_config_list` that
    serves every model folder in `export_dir` (each with a numeric version),
    for a server that sees `export_dir` at `container_dir`.

    Returns the config's path.
    """
    names = sorted(
        name
        for name in os.listdir(export_dir)
        if os.path.isdir(os.path.join(export_dir, name))
        and any(v.isdigit() for v in os.listdir(os.path.join(export_dir, name)))
    )
    entries = "".join(
        f'  config {{\n    name: "{name}"\n'
        f'    base_path: "{container_dir}/{name}"\n'
        '    model_platform: "tensorflow"\n  }\n'
        for name in names
    )
    path = os.path.join(export_dir, "models.config")
    atomic_write_text(path, f"model_config_list {{\n{entries}}}\n")
    return path


def _write_out(archive, path):
    """`archive.write_out(path)`, with TensorFlow's file errors as OSErrors.

    TensorFlow reports a full disk as `ResourceExhaustedError` ("No space left
    on device") and a read-only folder as `PermissionDeniedError`; as OSErrors
    they reach the caller like any other failed write.
    """
    try:
        archive.write_out(path, verbose=False)
    except tf.errors.ResourceExhaustedError as error:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from error
    except tf.errors.PermissionDeniedError as error:
        raise OSError(errno.EACCES, error.message, path) from error


def _replace(source, target):
    """Renames `source` to `target`, replacing an existing `target` folder."""
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix=".old-", dir=os.path.dirname(target))
        os.replace(target, os.path.join(old, "version"))
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)
