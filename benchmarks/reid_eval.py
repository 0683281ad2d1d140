r"""Re-ID evaluation speed and memory at Market-1501's full size, beside
fast-reid's Cython evaluator.

python benchmarks/reid_eval.py [--repeats=5] [--reference_repeats=3]

3,368 queries x 15,913 gallery images (750 ids, ~4.5 queries and ~17.5
gallery images per id, 2,793 distractors, 6 cameras), 2,048-d random
features. On one distance matrix (without ties), times `keras_dml.reid.evaluate_ranking`
against fast-reid's (and torchreid's) Cython `evaluate_cy`, which this
script builds from the fastreid 1.4.0 wheel at run time (`pip download`,
Cython installed if missing; nothing of fast-reid enters the repository);
then `evaluate_features` (chunked distances + ranking) and two per-query
loops of reference re-ID code, with the peak traced memory (tracemalloc) of
each. Every evaluator's CMC, mAP and mINP are checked equal.

`--scale=0.02 --fastreid=off --reference_repeats=1 --repeats=1` is the
test suite's smoke run.
"""

import contextlib
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile

import numpy as np
from absl import app, flags
from timing import machine

from keras_dml.reid import evaluate_features, evaluate_ranking, pairwise_distance

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 5, "Timed runs of keras_dml's evaluation.")
flags.DEFINE_integer(
    "reference_repeats", 3, "Timed runs of each per-query loop (~45 s each; 0: skip)."
)
flags.DEFINE_integer("dim", 2048, "Feature size.")
flags.DEFINE_float("scale", 1.0, "Fraction of Market-1501's size (ids and images).")
flags.DEFINE_enum(
    "fastreid",
    "auto",
    ["auto", "off"],
    "auto: build fast-reid's Cython evaluator (needs pip and a C compiler; "
    "skipped with the reason when either is missing); off: skip it.",
)
FASTREID_WHEEL = "fastreid==1.4.0"


def market_sized_ids(rng, scale=1.0):
    num_ids = max(2, round(750 * scale))
    ids = np.arange(1, num_ids + 1)
    query_pids = np.repeat(ids, 5)[: max(2, round(3368 * scale))]
    gallery_pids = np.concatenate(
        [
            np.repeat(ids, 18)[: max(2, round(13120 * scale))],
            np.zeros(round(2793 * scale), np.int64),
        ]
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


def fastreid_evaluator(workdir):
    """fast-reid 1.4.0's `evaluate_cy` (rank_cylib/rank_cy.pyx, the same file
    as torchreid's), compiled in `workdir`; or the reason it cannot be."""
    try:
        importlib.import_module("Cython")
    except ImportError:
        install = [sys.executable, "-m", "pip", "install", "-q", "cython"]
        if subprocess.run(install, capture_output=True).returncode:
            return None, "Cython could not be installed"
    download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
    download += [FASTREID_WHEEL, "-d", workdir]
    result = subprocess.run(download, capture_output=True, text=True)
    wheels = [f for f in os.listdir(workdir) if f.endswith(".whl")]
    if result.returncode or not wheels:
        return None, f"pip download {FASTREID_WHEEL} failed"
    with zipfile.ZipFile(os.path.join(workdir, wheels[0])) as wheel:
        source = wheel.read("fastreid/evaluation/rank_cylib/rank_cy.pyx")
    with open(os.path.join(workdir, "rank_cy.pyx"), "wb") as f:
        f.write(source)
    import pyximport

    pyximport.install(
        setup_args={"include_dirs": np.get_include()},
        build_dir=os.path.join(workdir, "build"),
        language_level=3,
    )
    sys.path.insert(0, workdir)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Compiler chatter.
            return importlib.import_module("rank_cy").evaluate_cy, None
    except Exception as error:  # noqa: BLE001 (any build failure: say why)
        return None, f"the Cython build failed ({type(error).__name__})"


def timed(run, repeats):
    """(median seconds, peak traced bytes, result) of `run()`."""
    return interleaved({"run": run}, repeats)["run"]


def interleaved(runs, repeats):
    """{name: (median seconds, peak traced bytes, last result)}, the runs
    taking turns so that a slow spell of this shared machine hits all.

    Timed without tracemalloc (it slows every allocation, which would favour
    code that allocates less); the peak memory comes from one more traced
    run of each.
    """
    seconds = {name: [] for name in runs}
    results = {}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            results[name] = run()
            seconds[name].append(time.perf_counter() - start)
    peaks = {}
    for name, run in runs.items():
        tracemalloc.start()
        run()
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {n: (statistics.median(seconds[n]), peaks[n], results[n]) for n in runs}


def main(argv):
    del argv  # Unused.
    rng = np.random.default_rng(0)
    q_pids, g_pids, q_cams, g_cams = market_sized_ids(rng, FLAGS.scale)
    query = rng.normal(size=(len(q_pids), FLAGS.dim)).astype(np.float32)
    gallery = rng.normal(size=(len(g_pids), FLAGS.dim)).astype(np.float32)
    ids = (q_pids, g_pids, q_cams, g_cams)
    # fast-reid's quicksort orders equal distances arbitrarily, ours by
    # gallery index, and float32 distances of random features do tie (~1 in
    # 3,000 queries changes a CMC entry): the ranking rows use each row's
    # stable ranks as distances, the same order without ties.
    distmat = pairwise_distance(query, gallery)
    distmat = np.argsort(np.argsort(distmat, kind="stable"), kind="stable")
    distmat = distmat.astype(np.float32)
    rows = []  # (name, seconds, peak bytes)

    with tempfile.TemporaryDirectory() as workdir:
        evaluate_cy, why_not = (
            fastreid_evaluator(workdir)
            if FLAGS.fastreid == "auto"
            else (None, "--fastreid=off")
        )
        ranking = {"ours": lambda: evaluate_ranking(distmat, *ids)}
        if evaluate_cy is not None:
            ranking["fastreid"] = lambda: evaluate_cy(distmat, *ids, 50)
        timings = interleaved(ranking, FLAGS.repeats)
    ours_seconds, ours_memory, ours_result = timings["ours"]
    rows.append(("`evaluate_ranking` (a distance matrix)", ours_seconds, ours_memory))
    if evaluate_cy is not None:
        cy_seconds, cy_memory, (cy_cmc, cy_aps, cy_inps) = timings["fastreid"]
        # fast-reid sums in float32.
        np.testing.assert_allclose(ours_result.cmc, cy_cmc, atol=1e-6)
        np.testing.assert_allclose(ours_result.mAP, np.mean(cy_aps), rtol=1e-5)
        np.testing.assert_allclose(ours_result.mINP, np.mean(cy_inps), rtol=1e-5)
        rows.append(
            (
                f"fast-reid {FASTREID_WHEEL[10:]} Cython `evaluate_cy` (same matrix)",
                cy_seconds,
                cy_memory,
            )
        )

    distances, distance_memory, _ = timed(
        lambda: pairwise_distance(query, gallery), FLAGS.repeats
    )
    features, features_memory, features_result = timed(
        lambda: evaluate_features(query, gallery, *ids), FLAGS.repeats
    )
    # Distances computed per chunk can differ from the whole matrix's in the
    # last bit (another summation order), which can reorder a near tie: at
    # most a query or two apart.
    np.testing.assert_allclose(
        features_result.cmc, ours_result.cmc, atol=2.5 / len(q_pids)
    )
    rows.insert(
        0, ("distance matrix alone (`pairwise_distance`)", distances, distance_memory)
    )
    rows.append(
        (
            "`evaluate_features` (distances + ranking, chunked)",
            features,
            features_memory,
        )
    )
    if FLAGS.reference_repeats:
        loop, loop_memory, (cmc, mean_ap) = timed(
            lambda: per_query_loop(pairwise_distance(query, gallery), *ids),
            FLAGS.reference_repeats,
        )
        sets, sets_memory, (sets_cmc, sets_ap) = timed(
            lambda: per_query_set_operations(query, gallery, *ids),
            FLAGS.reference_repeats,
        )
        # The loop sorts the same whole matrix stably: the same metrics. The
        # set operations compute their distances otherwise (no |q|^2, one
        # query at a time): near ties may fall the other way.
        np.testing.assert_allclose(ours_result.cmc, cmc, atol=1e-9)
        assert abs(ours_result.mAP - mean_ap) < 1e-9
        np.testing.assert_allclose(ours_result.cmc, sets_cmc, atol=2.5 / len(q_pids))
        assert abs(ours_result.mAP - sets_ap) < 1e-3
        rows.append(
            (
                "per-query loop over a pre-sorted matrix (torchreid style)",
                loop,
                loop_memory,
            )
        )
        rows.append(
            (
                "per-query distances and set operations (Market-1501 baseline style)",
                sets,
                sets_memory,
            )
        )

    print(f"\nMachine: {machine()}")
    print(
        f"{len(q_pids):,} queries x {len(g_pids):,} gallery, {FLAGS.dim}-d features; "
        f"median of {FLAGS.repeats} runs ({FLAGS.reference_repeats} for the loops), "
        "the two ranking rows interleaved.\n"
    )
    print("| evaluation | seconds | peak traced memory (MB) |")
    print("| --- | ---: | ---: |")
    for name, seconds, memory in rows:
        print(f"| {name} | {seconds:.3f} | {memory / 2**20:,.0f} |")
    print()
    if evaluate_cy is not None:
        print(
            f"Ranking: {cy_seconds / ours_seconds:.1f}x fast-reid's Cython "
            "evaluator on the same matrix; same CMC, mAP and mINP."
        )
    else:
        print(f"fast-reid's Cython evaluator: not run ({why_not}).")
    print(
        f"rank-1 {100 * ours_result.cmc[0]:.2f}%, mAP {100 * ours_result.mAP:.2f}%, "
        f"mINP {100 * ours_result.mINP:.2f}%."
    )


if __name__ == "__main__":
    app.run(main)
