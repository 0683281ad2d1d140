"""Re-ID ranking metrics: hand-worked cases, and agreement with a plain
per-query reference loop (written from the protocol, not from our code)."""

import numpy as np
import pytest
from reid_sort_reference import sorted_metrics

from keras_dml.reid import evaluate_features, evaluate_ranking, pairwise_distance


def reference(distmat, q_pids, g_pids, q_cams, g_cams, max_rank, ap):
    """The per-query loop of the reference implementations."""
    cmc_total, aps, inps, valid = np.zeros(max_rank), [], [], 0
    for i in range(len(q_pids)):
        order = sorted(range(len(g_pids)), key=lambda j: (distmat[i, j], j))
        kept = [
            j
            for j in order
            if g_pids[j] != -1
            and not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])
        ]
        good = [g_pids[j] == q_pids[i] for j in kept]
        if not any(good):
            continue
        valid += 1
        first = good.index(True)
        cmc = np.zeros(max_rank)
        cmc[first:] = 1
        cmc_total += cmc
        positions = [p for p, g in enumerate(good) if g]
        if ap == "standard":
            aps.append(np.mean([(r + 1) / (p + 1) for r, p in enumerate(positions)]))
        else:  # compute_AP.m, step by step.
            total, old_recall, old_precision, hits = 0.0, 0.0, 1.0, 0
            for p, g in enumerate(good):
                hits += g
                recall, precision = hits / len(positions), hits / (p + 1)
                total += (recall - old_recall) * (old_precision + precision) / 2
                old_recall, old_precision = recall, precision
                if hits == len(positions):
                    break
            aps.append(total)
        inps.append(len(positions) / (positions[-1] + 1))
    return cmc_total / valid, np.mean(aps), np.mean(inps), valid


def test_hand_worked_query():
    # Gallery order by distance: 0 (other id), 1 (match), 2 (other), 3 (match).
    distmat = np.array([[0.1, 0.2, 0.3, 0.4]])
    result = evaluate_ranking(distmat, [7], [1, 7, 2, 7], [1], [2, 2, 2, 3], max_rank=4)
    np.testing.assert_allclose(result.cmc, [0, 1, 1, 1])
    assert result.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)  # 0.5
    assert result.mINP == pytest.approx(2 / 4)
    official = evaluate_ranking(
        distmat, [7], [1, 7, 2, 7], [1], [2, 2, 2, 3], max_rank=4, ap="official"
    )
    # Trapezoids: (1/2)(0 + 1/2)/2 + (1/2)(1/3 + 2/4)/2 = 0.125 + 0.2083.
    assert official.mAP == pytest.approx(0.125 + (1 / 3 + 1 / 2) / 4)
    assert official.mAP < result.mAP
    # One pass computes both kinds.
    assert (result.mAP_standard, result.mAP_official) == (result.mAP, official.mAP)


def test_same_camera_matches_and_junk_are_removed_distractors_stay():
    # Closest: same id same camera (removed), junk (ignored), distractor (kept,
    # a negative), then the true match.
    distmat = np.array([[0.1, 0.2, 0.3, 0.4]])
    result = evaluate_ranking(
        distmat, [5], [5, -1, 0, 5], [1], [1, 2, 2, 2], max_rank=3
    )
    np.testing.assert_allclose(result.cmc, [0, 1, 1])
    assert result.mAP == pytest.approx(1 / 2)


def test_query_without_valid_match_is_skipped_and_counted():
    distmat = np.array([[0.1, 0.2], [0.2, 0.1]])
    # Query 0's only match shares its camera; query 1 has a match.
    result = evaluate_ranking(distmat, [1, 2], [1, 2], [1, 1], [1, 2], max_rank=2)
    assert (result.num_valid_queries, result.num_skipped_queries) == (1, 1)
    np.testing.assert_allclose(result.cmc, [1, 1])
    with pytest.raises(ValueError, match="No query has a valid match"):
        evaluate_ranking(distmat[:1], [1], [1, 2], [1], [1, 2])


def test_ties_go_to_the_lower_gallery_index():
    distmat = np.array([[0.5, 0.5, 0.5]])
    first = evaluate_ranking(distmat, [1], [1, 2, 3], [1], [2, 2, 2], max_rank=3)
    last = evaluate_ranking(distmat, [1], [3, 2, 1], [1], [2, 2, 2], max_rank=3)
    np.testing.assert_allclose(first.cmc, [1, 1, 1])
    np.testing.assert_allclose(last.cmc, [0, 0, 1])


def test_fewer_gallery_entries_than_max_rank():
    distmat = np.array([[0.3, 0.1, 0.2]])
    result = evaluate_ranking(distmat, [4], [4, 8, 9], [1], [2, 2, 2], max_rank=50)
    assert result.cmc.shape == (50,)
    np.testing.assert_allclose(result.cmc[:4], [0, 0, 1, 1])
    assert result.cmc[-1] == 1 and result.mAP == pytest.approx(1 / 3)


def test_negative_distances_sort_correctly():
    distmat = np.array([[-0.5, 0.2, -1.5, 0.0]])
    result = evaluate_ranking(distmat, [1], [2, 3, 1, 4], [1], [2, 2, 2, 2], max_rank=2)
    np.testing.assert_allclose(result.cmc, [1, 1])


@pytest.mark.parametrize("ap", ["standard", "official"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_reference_loop_on_random_cases(ap, seed):
    rng = np.random.default_rng(seed)
    num_q, num_g = 40, 120
    g_pids = rng.integers(-1, 15, size=num_g)
    q_pids = rng.integers(1, 15, size=num_q)
    g_cams, q_cams = rng.integers(1, 4, size=num_g), rng.integers(1, 4, size=num_q)
    # Rounded distances: many ties.
    distmat = np.round(rng.random((num_q, num_g)), 1).astype(np.float32)
    expected_cmc, expected_map, expected_inp, valid = reference(
        distmat, q_pids, g_pids, q_cams, g_cams, 20, ap
    )
    result = evaluate_ranking(
        distmat, q_pids, g_pids, q_cams, g_cams, max_rank=20, ap=ap, chunk_size=7
    )
    np.testing.assert_allclose(result.cmc, expected_cmc)
    assert result.mAP == pytest.approx(expected_map)
    assert result.mINP == pytest.approx(expected_inp)
    assert result.num_valid_queries == valid


@pytest.mark.parametrize("seed", range(6))
def test_counting_equals_the_sorting_implementation(seed):
    """The ranks counted per match give exactly what sorting every row gave,
    with ties (between matches, and between a match and others), junk,
    distractors, same-camera matches and queries without a kept match."""
    rng = np.random.default_rng(seed)
    num_q, num_g = 60, 400
    g_pids = rng.integers(-1, 25, size=num_g)  # -1 junk, 0 distractors.
    q_pids = rng.integers(1, 30, size=num_q)  # 25..29: not in the gallery.
    g_cams, q_cams = rng.integers(1, 4, size=num_g), rng.integers(1, 4, size=num_q)
    distances = rng.random((num_q, num_g)).astype(np.float32)
    if seed % 2:
        distances = np.round(distances, 2)  # Ties everywhere.
    else:
        distances[:, rng.integers(0, num_g, 40)] = 0.5  # Some columns tie.
    expected = sorted_metrics(distances, q_pids, g_pids, q_cams, g_cams, 30)
    cmc, standard, official, inp, valid, skipped = expected
    assert valid and skipped  # Both kinds of query are in the case.
    for chunk_size in (1, 7, 256):
        result = evaluate_ranking(
            distances,
            q_pids,
            g_pids,
            q_cams,
            g_cams,
            max_rank=30,
            chunk_size=chunk_size,
        )
        np.testing.assert_allclose(result.cmc, cmc, rtol=0, atol=1e-12)
        assert result.mAP_standard == pytest.approx(standard, rel=1e-12)
        assert result.mAP_official == pytest.approx(official, rel=1e-12)
        assert result.mINP == pytest.approx(inp, rel=1e-12)
        assert (result.num_valid_queries, result.num_skipped_queries) == (
            valid,
            skipped,
        )


def test_a_match_at_infinite_distance_ranks_after_every_kept_entry():
    distances = np.array([[np.inf, 0.3, np.inf, 0.1, np.inf]], np.float32)
    # Gallery 0: removed (same person and camera); 2: junk; 4: the match.
    result = evaluate_ranking(
        distances, [5], [5, 1, -1, 2, 5], [1], [1, 2, 2, 2, 3], max_rank=3
    )
    np.testing.assert_allclose(result.cmc, [0, 0, 1])
    assert result.mINP == pytest.approx(1 / 3)


def test_distances():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(5, 8)), rng.normal(size=(7, 8))
    expected = np.linalg.norm(q[:, None] - g[None], axis=-1)
    np.testing.assert_allclose(pairwise_distance(q, g), expected, rtol=1e-4)
    np.testing.assert_allclose(
        pairwise_distance(q, g, "sqeuclidean"), expected**2, rtol=1e-4
    )
    cosine = (
        1
        - (q / np.linalg.norm(q, axis=1, keepdims=True))
        @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    )
    np.testing.assert_allclose(pairwise_distance(q, g, "cosine"), cosine, atol=1e-5)
    assert pairwise_distance(q, q).diagonal().max() < 1e-3


def test_features_path_equals_the_matrix_path():
    rng = np.random.default_rng(3)
    q, g = rng.normal(size=(30, 16)), rng.normal(size=(90, 16))
    ids = dict(
        query_pids=rng.integers(0, 10, 30),
        gallery_pids=rng.integers(0, 10, 90),
        query_camids=rng.integers(1, 3, 30),
        gallery_camids=rng.integers(1, 3, 90),
    )
    for metric in ("euclidean", "cosine"):
        a = evaluate_ranking(pairwise_distance(q, g, metric), **ids, max_rank=10)
        b = evaluate_features(q, g, **ids, metric=metric, max_rank=10, chunk_size=4)
        np.testing.assert_allclose(a.cmc, b.cmc)
        assert a.mAP == pytest.approx(b.mAP) and a.mINP == pytest.approx(b.mINP)


def test_bad_inputs():
    distmat = np.zeros((2, 3))
    ids = ([1, 2], [1, 2, 3], [1, 1], [2, 2, 2])
    with pytest.raises(ValueError, match=r"`gallery_pids` must be 3 integers"):
        evaluate_ranking(distmat, [1, 2], [1, 2], [1, 1], [2, 2, 2])
    with pytest.raises(
        ValueError, match=r"`distmat` must be a numeric \[num_items, dim\]"
    ):
        evaluate_ranking(np.zeros(3), *ids)
    with pytest.raises(ValueError, match="`ap` must be one of"):
        evaluate_ranking(distmat, *ids, ap="matlab")
    with pytest.raises(ValueError, match="`max_rank` must be an integer >= 1"):
        evaluate_ranking(distmat, *ids, max_rank=0)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_ranking(np.full((2, 3), np.nan), *ids)
    with pytest.raises(ValueError, match="differ in size: 4 vs 5"):
        pairwise_distance(np.zeros((2, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="`metric` must be one of"):
        pairwise_distance(np.zeros((2, 4)), np.zeros((3, 4)), "manhattan")
