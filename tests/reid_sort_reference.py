"""keras_dml's re-ID ranking before it counted instead of sorting, kept as
the slow reference of tests/test_reid_evaluation.py: every row sorted by
(distance, gallery index), then CMC, both APs and mINP from cumulative sums
over the sorted rows. (It sorted integer keys made of the distance's bits;
here numpy's lexsort gives the same order, with -0.0 equal to 0.0 as in any
comparison sort.)"""

import numpy as np

JUNK_ID = -1


def _stable_order(distances):
    return np.lexsort(
        (np.broadcast_to(np.arange(distances.shape[1]), distances.shape), distances),
        axis=1,
    )


def sorted_metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """`(cmc, mAP_standard, mAP_official, mINP, valid, skipped)`."""
    distmat = np.asarray(distmat, np.float32)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    order = _stable_order(distmat)
    pids = g_pids[order]
    same_id = pids == q_pids[:, np.newaxis]
    removed = same_id & (g_camids[order] == q_camids[:, np.newaxis])
    kept = ~removed & (pids != JUNK_ID)
    matches = same_id & kept
    num_matches = matches.sum(1)
    has_match = num_matches > 0
    skipped = int((~has_match).sum())
    matches, kept, num_matches = (
        matches[has_match],
        kept[has_match],
        num_matches[has_match],
    )
    positions = np.cumsum(kept, axis=1) - 1
    k = np.cumsum(matches, axis=1)
    rows = np.arange(len(matches))
    first = positions[rows, matches.argmax(1)]
    hits = np.zeros((len(matches), max_rank + 1), np.int64)
    np.add.at(hits, (rows, np.minimum(first, max_rank)), 1)
    cmc = np.cumsum(hits, axis=1)[:, :max_rank].sum(0) / len(matches)
    rank = np.where(matches, positions + 1, 1)
    precision = np.where(matches, k / rank, 0.0)
    standard = precision.sum(1) / num_matches
    before = np.where(rank > 1, (k - 1) / np.maximum(rank - 1, 1), 1.0)
    official = (np.where(matches, before, 0.0) + precision).sum(1) / (2 * num_matches)
    last = positions[rows, matches.shape[1] - 1 - matches[:, ::-1].argmax(1)]
    inp = num_matches / (last + 1)
    return cmc, standard.mean(), official.mean(), inp.mean(), len(matches), skipped
