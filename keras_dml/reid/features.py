"""Re-ID features: the pooled embeddings of one peer or of a whole cohort."""

import contextlib
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_dml.cohort.mutual_learning import MutualLearningModel
from keras_dml.reid.evaluation import l2_normalize

ENSEMBLES = ("concat", "mean")
ENSEMBLE = "ensemble"


class ReidFeatures(NamedTuple):
    """`features`: [N, dim] for one peer, or a dict from each peer's name (and
    "ensemble") to its [N, dim] features for a cohort."""

    features: object
    person_ids: np.ndarray
    camera_ids: np.ndarray


def _peer_list(peer_or_peers):
    if isinstance(peer_or_peers, MutualLearningModel):
        return list(peer_or_peers.peers), True
    if isinstance(peer_or_peers, (list, tuple)):
        return list(peer_or_peers), True
    if isinstance(peer_or_peers, keras.Model):
        return [peer_or_peers], False
    raise ValueError(
        "Expected a peer (keras.Model), a list of peers or a MutualLearningModel. "
        f"Received: {type(peer_or_peers).__name__}"
    )


def extract_features(
    peer_or_peers, dataset, *, flip=False, normalize=False, ensemble="concat", verbose=1
):
    """Embeds every image of an evaluation dataset.

    Args:
        peer_or_peers: a re-ID peer (returns a dict with "embedding"), a list
            of them, or a `MutualLearningModel`.
        dataset: yields `(images, {"person_id": ..., "camera_id": ...})`, as
            `keras_dml.data.market1501_dataset(root, "query" | "gallery")` does.
        flip: average each image's embedding with its mirror image's.
        normalize: L2-normalize each peer's features (before the ensemble).
        ensemble: how a cohort's features combine: "concat" (as the official
            DML code evaluates) or "mean" (peers of equal feature size).
        verbose: 1 shows a progress bar.

    Returns:
        `ReidFeatures(features, person_ids, camera_ids)`; for a cohort,
        `features` maps each peer's name and "ensemble" to [N, dim] arrays.
    """
    peers, cohort = _peer_list(peer_or_peers)
    if ensemble not in ENSEMBLES:
        raise ValueError(
            f"`ensemble` must be one of {ENSEMBLES}. Received: {ensemble!r}"
        )

    @_for_inference
    def embed(images):
        outputs = []
        for peer in peers:
            embedding = _embedding(peer, images)
            if flip:
                mirrored = images[:, :, ::-1]
                embedding = (embedding + _embedding(peer, mirrored)) / 2
            outputs.append(embedding)
        return outputs

    cardinality = int(dataset.cardinality())
    progress = keras.utils.Progbar(
        cardinality if cardinality > 0 else None, verbose=verbose
    )
    per_peer, person_ids, camera_ids = [[] for _ in peers], [], []
    for step, batch in enumerate(dataset):
        images, ids = batch[0], batch[1]
        if not isinstance(ids, dict) or not {"person_id", "camera_id"} <= set(ids):
            raise ValueError(
                "The dataset must yield (images, {'person_id': ..., "
                "'camera_id': ...}), as market1501_dataset(root, 'query') does."
            )
        for store, embedding in zip(per_peer, embed(images)):
            store.append(keras.ops.convert_to_numpy(embedding))
        person_ids.append(np.asarray(ids["person_id"]))
        camera_ids.append(np.asarray(ids["camera_id"]))
        progress.update(step + 1)
    features = [np.concatenate(f).astype(np.float32) for f in per_peer]
    if normalize:
        features = [l2_normalize(f) for f in features]
    person_ids, camera_ids = np.concatenate(person_ids), np.concatenate(camera_ids)
    if not cohort:
        return ReidFeatures(features[0], person_ids, camera_ids)
    result = {peer.name: f for peer, f in zip(peers, features)}
    result[ENSEMBLE] = combine(features, ensemble)
    return ReidFeatures(result, person_ids, camera_ids)


def combine(features, ensemble="concat"):
    """The cohort's feature from its peers' ([N, d_k] arrays)."""
    if ensemble == "concat":
        return np.concatenate(features, axis=1)
    sizes = {f.shape[1] for f in features}
    if len(sizes) > 1:
        raise ValueError(
            "ensemble='mean' needs peers of one feature size. Received sizes "
            f"{sorted(sizes)}; use ensemble='concat'."
        )
    return np.mean(features, axis=0)


def _embedding(peer, images):
    if keras.backend.backend() == "tensorflow":
        output = peer(images, training=False)
    else:
        output = peer.predict_on_batch(images)
    if not isinstance(output, dict) or "embedding" not in output:
        raise ValueError(
            f"Peer {peer.name!r} returns no 'embedding'; re-ID peers return "
            "{'logits': ..., 'embedding': ...} (see keras_dml.models.reid_mobilenet)."
        )
    return keras.ops.cast(output["embedding"], "float32")


def _for_inference(embed):
    """`embed` as this backend runs inference best: a `tf.function` on
    TensorFlow; on JAX and PyTorch, each peer's own compiled `predict_on_batch`
    (jitted on JAX, without gradients on PyTorch). Under a JAX
    `DataParallel` distribution each batch is given whole to the
    (replicated) weights, so a batch of any size works."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return tf.function(embed)

    def run(images):
        if backend == "jax":
            # Lazy: the JAX step file imports jax, which only a JAX run has.
            from keras_dml.cohort.steps.jax import whole_batches
        else:
            whole_batches = contextlib.nullcontext
        with whole_batches():
            return embed(np.asarray(images))

    return run
