"""Re-ID ranking metrics: CMC, mAP (standard and official Market-1501 AP), mINP.

Protocol (Market-1501): for each query, gallery entries of the same person
seen by the same camera are removed, and entries with person id -1 (junk)
are ignored; distractors (id 0) stay as plain negatives. A query with no
matching gallery entry left is skipped and counted. Ties in distance are
broken by gallery index, so results are deterministic.

No row is sorted: a match's rank is the number of kept gallery entries
closer than it, counted with vectorized comparisons, and CMC, both APs and
mINP follow from the ranks of each query's few matches (`MatchRanker`).
Distances are computed one chunk of queries at a time, so the full matrix
never exists in `evaluate_features`. BENCHMARKS.md times this against
fast-reid's Cython evaluator at Market-1501's size.
"""

from typing import NamedTuple

import numpy as np

from keras_dml.checks import check_number

METRICS = ("euclidean", "sqeuclidean", "cosine")
AP_KINDS = ("standard", "official")
JUNK_ID = -1


class RankingResult(NamedTuple):
    """`cmc[k-1]`: fraction of valid queries with a match in the first k;
    `mAP` (of the requested AP kind), `mINP`: fractions;
    `num_valid_queries` / `num_skipped_queries`. Both AP kinds cost one pass,
    so both are kept: `mAP_standard`, `mAP_official`."""

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int
    num_skipped_queries: int
    mAP_standard: float
    mAP_official: float

    def rank(self, k):
        return float(self.cmc[k - 1])


def _as_2d(name, features):
    features = np.asarray(features)
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
        raise ValueError(
            f"`{name}` must be a numeric [num_items, dim] array. "
            f"Received: {features.dtype} {features.shape}"
        )
    return features.astype(np.float32, copy=False)


def pairwise_distance(query, gallery, metric="euclidean"):
    """Distances between every query and gallery feature, float32 [Q, G].

    "euclidean" and "sqeuclidean" use |q|^2 + |g|^2 - 2 q.g (one matrix
    product, clipped at 0 against rounding); "cosine" is 1 - cos(q, g).
    """
    return GalleryDistances(gallery, metric)(query)


class GalleryDistances:
    """Distances from queries to one gallery, with what depends on the
    gallery alone (its squared norms, or its unit rows) computed once: a
    chunked evaluation then costs one matrix product per chunk."""

    def __init__(self, gallery, metric="euclidean"):
        if metric not in METRICS:
            raise ValueError(f"`metric` must be one of {METRICS}. Received: {metric!r}")
        self.metric = metric
        gallery = _as_2d("gallery", gallery)
        if metric == "cosine":
            self.gallery = l2_normalize(gallery)
        else:
            self.gallery = gallery
            self.squared_norms = np.square(gallery).sum(1)[np.newaxis]

    def __call__(self, query):
        query = _as_2d("query", query)
        if query.shape[1] != self.gallery.shape[1]:
            raise ValueError(
                f"query and gallery features differ in size: {query.shape[1]} vs "
                f"{self.gallery.shape[1]}."
            )
        if self.metric == "cosine":
            return 1.0 - l2_normalize(query) @ self.gallery.T
        distances = query @ self.gallery.T
        distances *= -2.0
        distances += np.square(query).sum(1, keepdims=True)
        distances += self.squared_norms
        np.maximum(distances, 0.0, out=distances)
        if self.metric == "euclidean":
            return np.sqrt(distances, out=distances)
        return distances


def l2_normalize(features):
    """Rows scaled to unit length; an all-zero row is left as it is (untrained
    backbones can give embeddings with norms far below 1e-12 that still rank)."""
    norms = np.linalg.norm(features.astype(np.float64), axis=1, keepdims=True)
    return (features / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class MatchRanker:
    """The 1-based rank, among the kept gallery entries, of each query's
    matches, without sorting the rows.

    A match's rank is one plus the number of kept entries closer to the
    query than it, ties going to the lower gallery index: the position a
    stable sort of the row would give it. Kept: not junk (person id -1) and
    not the query's own person under the query's camera. A query has ~14
    matches among ~16,000 gallery entries on Market-1501, so comparing the
    row with each match's distance (SIMD comparisons and counts) costs a
    fraction of sorting the row, which is what other evaluators do.
    """

    def __init__(self, gallery_pids, gallery_camids):
        self.gallery_camids = gallery_camids
        self.junk = np.flatnonzero(gallery_pids == JUNK_ID)
        order = np.argsort(gallery_pids, kind="stable")
        pids, starts = np.unique(gallery_pids[order], return_index=True)
        self.by_person = dict(zip(pids.tolist(), np.split(order, starts[1:])))
        self.by_person.pop(JUNK_ID, None)
        self.none = np.zeros(0, np.int64)

    def ranks(self, row, query_pid, query_camid):
        """Increasing int64 ranks of one query's matches (empty: none kept).

        Args:
            row: float32 `[G]` distances of the query to the gallery, no NaN.
        """
        same_person = self.by_person.get(int(query_pid), self.none)
        same_camera = self.gallery_camids[same_person] == query_camid
        columns = same_person[~same_camera]
        if columns.size == 0:
            return columns
        removed = same_person[same_camera]
        if self.junk.size:
            removed = np.concatenate([removed, self.junk])
        at = row[columns][:, np.newaxis]
        if np.count_nonzero(row == at) != columns.size:
            return self._ranks_with_ties(row, columns, removed)
        below = row < at
        closer = np.array([np.count_nonzero(b) for b in below])
        if removed.size:
            closer -= np.count_nonzero(row[removed] < at, axis=1)
        return np.sort(closer + 1)

    @staticmethod
    def _ranks_with_ties(row, columns, removed):
        """The same when some entry is exactly as far as a match: the one
        with the lower gallery index goes first."""
        kept = np.ones(row.shape, bool)
        kept[removed] = False
        ranks = np.empty(columns.size, np.int64)
        for j, column in enumerate(columns):
            distance = row[column]
            ranks[j] = (
                np.count_nonzero((row < distance) & kept)
                + np.count_nonzero((row[:column] == distance) & kept[:column])
                + 1
            )
        return np.sort(ranks)


def _check_ids(name, ids, length):
    ids = np.asarray(ids)
    if ids.shape != (length,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"`{name}` must be {length} integers (one per row/column of the "
            f"distance matrix). Received: {ids.dtype} {ids.shape}"
        )
    return ids.astype(np.int64)


class _Accumulator:
    def __init__(self, max_rank, ap, gallery_pids, gallery_camids):
        self.ranker = MatchRanker(gallery_pids, gallery_camids)
        self.cmc = np.zeros(max_rank + 1, np.int64)  # The last: beyond max_rank.
        self.ap_sums = {kind: 0.0 for kind in AP_KINDS}
        self.inp_sum = 0.0
        self.valid = 0
        self.skipped = 0
        self.max_rank = max_rank
        self.ap = ap

    def add(self, distances, query_pids, query_camids):
        found = [
            self.ranker.ranks(row, pid, camid)
            for row, pid, camid in zip(distances, query_pids, query_camids)
        ]
        ranks = [r for r in found if r.size]
        self.skipped += len(found) - len(ranks)
        if not ranks:
            return
        # Every valid query's ranks back to back; `starts` where each begins.
        sizes = np.array([r.size for r in ranks])
        starts = np.cumsum(sizes) - sizes
        ranks = np.concatenate(ranks)
        # How many of its matches a query has found up to each one: 1, 2, ...
        hits = np.arange(1, ranks.size + 1) - np.repeat(starts, sizes)
        precision = hits / ranks
        # Market-1501's compute_AP.m: trapezoid between the precision just
        # before each match's position and at it (1.0 before position 1).
        before = np.where(ranks > 1, (hits - 1) / np.maximum(ranks - 1, 1), 1.0)
        self.ap_sums["standard"] += float(
            (np.add.reduceat(precision, starts) / sizes).sum()
        )
        self.ap_sums["official"] += float(
            (np.add.reduceat(before + precision, starts) / (2 * sizes)).sum()
        )
        self.inp_sum += float((sizes / ranks[starts + sizes - 1]).sum())
        first = np.minimum(ranks[starts] - 1, self.max_rank)
        self.cmc += np.cumsum(np.bincount(first, minlength=self.max_rank + 1))
        self.valid += len(sizes)

    def result(self):
        if self.valid == 0:
            raise ValueError(
                "No query has a valid match in the gallery (same person, other "
                "camera); the ids or camera ids are likely wrong."
            )
        return RankingResult(
            cmc=self.cmc[: self.max_rank] / self.valid,
            mAP=self.ap_sums[self.ap] / self.valid,
            mINP=self.inp_sum / self.valid,
            num_valid_queries=self.valid,
            num_skipped_queries=self.skipped,
            mAP_standard=self.ap_sums["standard"] / self.valid,
            mAP_official=self.ap_sums["official"] / self.valid,
        )


def _check_options(max_rank, ap, chunk_size):
    if ap not in AP_KINDS:
        raise ValueError(f"`ap` must be one of {AP_KINDS}. Received: ap={ap!r}")
    check_number("`max_rank`", max_rank, 1, integer=True)
    check_number("`chunk_size`", chunk_size, 1, integer=True)


def evaluate_ranking(
    distmat,
    query_pids,
    gallery_pids,
    query_camids,
    gallery_camids,
    *,
    max_rank=50,
    ap="standard",
    chunk_size=256,
):
    """CMC, mAP and mINP of a query x gallery distance matrix.

    Args:
        distmat: [Q, G] distances (smaller is closer).
        query_pids, gallery_pids, query_camids, gallery_camids: integer ids.
        max_rank: length of the CMC curve. Queries with fewer kept gallery
            entries than `max_rank` are handled (their curve reaches 1 at their
            first match).
        ap: "standard" (torchreid / fast-reid: mean over the R matches of
            r / p_r, p_r the 1-based position of the r-th match) or "official"
            (Market-1501's MATLAB `compute_AP.m`, trapezoid rule; lower).
        chunk_size: queries ranked at once (bounds memory to ~8 bytes x
            chunk_size x G).

    Returns:
        A `RankingResult`.

    Raises:
        ValueError: bad shapes, mismatched lengths, NaN distances, or no query
            with a valid match.
    """
    _check_options(max_rank, ap, chunk_size)
    distmat = _as_2d("distmat", distmat)
    num_queries, num_gallery = distmat.shape
    query_pids = _check_ids("query_pids", query_pids, num_queries)
    query_camids = _check_ids("query_camids", query_camids, num_queries)
    gallery_pids = _check_ids("gallery_pids", gallery_pids, num_gallery)
    gallery_camids = _check_ids("gallery_camids", gallery_camids, num_gallery)
    if np.isnan(distmat).any():
        raise ValueError("`distmat` holds NaN distances.")
    accumulator = _Accumulator(max_rank, ap, gallery_pids, gallery_camids)
    for start in range(0, num_queries, chunk_size):
        rows = slice(start, start + chunk_size)
        accumulator.add(distmat[rows], query_pids[rows], query_camids[rows])
    return accumulator.result()


def evaluate_features(
    query_features,
    gallery_features,
    query_pids,
    gallery_pids,
    query_camids,
    gallery_camids,
    *,
    metric="euclidean",
    max_rank=50,
    ap="standard",
    chunk_size=256,
):
    """`evaluate_ranking` straight from features, one chunk of queries at a
    time: the full distance matrix (200 MB for Market-1501) never exists."""
    _check_options(max_rank, ap, chunk_size)
    query = _as_2d("query_features", query_features)
    gallery = _as_2d("gallery_features", gallery_features)
    query_pids = _check_ids("query_pids", query_pids, len(query))
    query_camids = _check_ids("query_camids", query_camids, len(query))
    gallery_pids = _check_ids("gallery_pids", gallery_pids, len(gallery))
    gallery_camids = _check_ids("gallery_camids", gallery_camids, len(gallery))
    accumulator = _Accumulator(max_rank, ap, gallery_pids, gallery_camids)
    to_gallery = GalleryDistances(gallery, metric)
    for start in range(0, len(query), chunk_size):
        rows = slice(start, start + chunk_size)
        distances = to_gallery(query[rows])
        if np.isnan(distances).any():
            raise ValueError("The features give NaN distances.")
        accumulator.add(distances, query_pids[rows], query_camids[rows])
    return accumulator.result()
