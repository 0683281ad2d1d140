r"""Re-ID evaluation speed and memory at Market-1501's full size.

python benchmarks/reid_eval.py [--repeats=5] [--reference_repeats=3]

3,368 queries x 15,913 gallery images (750 ids, ~4.5 queries and ~17.5
gallery images per id, 2,793 distractors, 6 cameras), 2,048-d random
features. Times `keras_dml.reid.evaluate_features` (chunked distances +
ranking, both AP kinds in one pass) against two per-query loops of reference
re-ID code over a full distance matrix, and reports the peak traced memory
(tracemalloc) of each. All give the same CMC and mAP (checked here).
"""

import statistics
import time
import tracemalloc

import numpy as np
from absl import app, flags
from timing import machine

from keras_dml.reid import evaluate_features, pairwise_distance

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 5, "Timed runs of keras_dml's evaluation.")
flags.DEFINE_integer(
    "reference_repeats", 3, "Timed runs of the per-query loop (~45 s each)."
)
flags.DEFINE_integer("dim", 2048, "Feature size.")


def market_sized_ids(rng):
    ids = np.arange(1, 751)
    query_pids = np.repeat(ids, 5)[:3368]
    gallery_pids = np.concatenate(
        [np.repeat(ids, 18)[:13120], np.zeros(2793, np.int64)]
    )
    return (
        query_pids,
        gallery_pids,
        rng.integers(1, 7, size=len(query_pids)),
        rng.integers(1, 7, size=len(gallery_pids)),
    )


def per_query_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """What reference re-ID code does: sort every row, then one Python
    iteration per query."""
    order = np.argsort(distmat, axis=1, kind="stable")
    matches = g_pids[order] == q_pids[:, np.newaxis]
    cmc_all, aps = [], []
    for i in range(len(q_pids)):
        remove = (g_pids[order[i]] == q_pids[i]) & (g_camids[order[i]] == q_camids[i])
        keep = ~remove
        hits = matches[i][keep]
        if not hits.any():
            continue
        cmc = hits.cumsum()
        cmc[cmc > 1] = 1
        cmc_all.append(cmc[:max_rank])
        precision = hits.cumsum() / (np.arange(len(hits)) + 1.0)
        aps.append((precision * hits).sum() / hits.sum())
    return np.mean(cmc_all, axis=0), float(np.mean(aps))


def per_query_set_operations(
    query, gallery, q_pids, g_pids, q_camids, g_camids, max_rank=50
):
    """The per-query loop of the Market-1501 baseline evaluations: one query's
    distances (a matrix-vector product), its sort, good and junk indices by
    set operations, then the walk down the ranking."""
    cmc_all, aps = np.zeros(max_rank), []
    gallery_norms = np.square(gallery).sum(1)
    for i in range(len(q_pids)):
        distances = gallery_norms - 2 * gallery @ query[i]  # + |q|^2: same order.
        index = np.argsort(distances, kind="stable")
        same_id = np.argwhere(g_pids == q_pids[i]).ravel()
        same_cam = np.argwhere(g_camids == q_camids[i]).ravel()
        good = np.setdiff1d(same_id, same_cam, assume_unique=True)
        junk = np.union1d(np.intersect1d(same_id, same_cam), np.argwhere(g_pids == -1))
        if good.size == 0:
            continue
        index = index[np.isin(index, junk, invert=True)]
        rows_good = np.flatnonzero(np.isin(index, good))
        cmc = np.zeros(max_rank)
        cmc[min(rows_good[0], max_rank) :] = 1
        cmc_all += cmc
        aps.append(np.mean((np.arange(len(rows_good)) + 1) / (rows_good + 1)))
    return cmc_all / len(aps), float(np.mean(aps))


def timed(run, repeats):
    seconds, peaks, result = [], [], None
    for _ in range(repeats):
        tracemalloc.start()
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return statistics.median(seconds), max(peaks), result


def main(argv):
    del argv  # Unused.
    rng = np.random.default_rng(0)
    q_pids, g_pids, q_cams, g_cams = market_sized_ids(rng)
    query = rng.normal(size=(len(q_pids), FLAGS.dim)).astype(np.float32)
    gallery = rng.normal(size=(len(g_pids), FLAGS.dim)).astype(np.float32)
    ids = (q_pids, g_pids, q_cams, g_cams)

    ours, ours_memory, ours_result = timed(
        lambda: evaluate_features(query, gallery, *ids), FLAGS.repeats
    )
    distances, distance_memory, _ = timed(
        lambda: pairwise_distance(query, gallery), FLAGS.repeats
    )
    reference, reference_memory, (cmc, mean_ap) = timed(
        lambda: per_query_loop(pairwise_distance(query, gallery), *ids),
        FLAGS.reference_repeats,
    )
    sets, sets_memory, (sets_cmc, sets_ap) = timed(
        lambda: per_query_set_operations(query, gallery, *ids),
        FLAGS.reference_repeats,
    )
    for other_cmc, other_ap in ((cmc, mean_ap), (sets_cmc, sets_ap)):
        np.testing.assert_allclose(ours_result.cmc, other_cmc, atol=1e-9)
        assert abs(ours_result.mAP - other_ap) < 1e-9

    print(f"\nMachine: {machine()}")
    print(
        f"{len(q_pids):,} queries x {len(g_pids):,} gallery, {FLAGS.dim}-d features; "
        f"median of {FLAGS.repeats} runs ({FLAGS.reference_repeats} for the loop).\n"
    )
    print("| evaluation | seconds | peak traced memory (MB) |")
    print("| --- | ---: | ---: |")
    rows = [
        ("distance matrix alone (pairwise_distance)", distances, distance_memory),
        ("evaluate_features (distances + ranking, chunked)", ours, ours_memory),
        (
            "per-query loop over a pre-sorted matrix (torchreid style)",
            reference,
            reference_memory,
        ),
        (
            "per-query distances and set operations (Market-1501 baseline style)",
            sets,
            sets_memory,
        ),
    ]
    for name, seconds, memory in rows:
        print(f"| {name} | {seconds:.2f} | {memory / 2**20:,.0f} |")
    print(
        f"\nSpeed-up: {reference / ours:.1f}x and {sets / ours:.0f}x; same CMC and mAP "
        f"(rank-1 {100 * ours_result.cmc[0]:.2f}%, mAP {100 * ours_result.mAP:.2f}%)."
    )


if __name__ == "__main__":
    app.run(main)
