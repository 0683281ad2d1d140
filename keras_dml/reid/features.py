"""Re-ID features: the pooled embeddings of one peer or of a whole cohort."""

from typing import NamedTuple

import keras
import numpy as np

from keras_dml.backends import runtime
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

    backend = runtime()

    @backend.for_inference
    def embed(images):
        outputs = []
        for peer in peers:
            embedding = _embedding(backend, peer, images)
            if flip:
                mirrored = images[:, :, ::-1]
                embedding = (embedding + _embedding(backend, peer, mirrored)) / 2
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


def _embedding(backend, peer, images):
    output = backend.peer_output(peer, images)
    if not isinstance(output, dict) or "embedding" not in output:
        raise ValueError(
            f"Peer {peer.name!r} returns no 'embedding'; re-ID peers return "
            "{'logits': ..., 'embedding': ...} (see keras_dml.models.reid_mobilenet)."
        )
    return keras.ops.cast(output["embedding"], "float32")
