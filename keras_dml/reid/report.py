"""Re-ID evaluation of a cohort and its report: every query ranks the gallery
with each peer's features and the ensemble's (the peers' features
concatenated, as the DML paper evaluates); rank-k, both mAPs and mINP as a
table, JSON and a CMC plot. The query and gallery come from the dataset
(`keras_dml.datasets.market1501`), as batches of (images, person ids,
camera ids): nothing here reads a dataset's files."""

import os
import warnings

import numpy as np

from keras_dml.figures import save_figure
from keras_dml.files import atomic_write_text, write_json
from keras_dml.reid.evaluation import evaluate_features
from keras_dml.reid.features import extract_features

RANKS = (1, 5, 10, 20)


def normalization_of(peers):
    """The input scaling the peers' backbones expect (the first peer's when
    they differ: one pipeline feeds them all)."""
    kinds = [getattr(p, "preprocessing", "imagenet") for p in peers]
    if len(set(kinds)) > 1:
        warnings.warn(
            f"The peers expect different input scalings {kinds}; one pipeline "
            f"feeds them all, with {kinds[0]!r}.",
            stacklevel=2,
        )
    return kinds[0]


def evaluate_cohort(model, splits, *, metric="euclidean", flip=False, verbose=1):
    """Ranks the gallery for every query with each peer's features and the
    ensemble's (concatenated), with both AP definitions.

    Args:
        splits: `split -> batches of (images, person ids, camera ids)` for
            "query" and "gallery" (`keras_dml.datasets.market1501_dataset`).

    Returns `{name: {"rank1", "rank5", "rank10", "rank20", "mAP",
    "mAP_official", "mINP", "cmc", "num_valid_queries"}}` (fractions).
    """
    features = {}
    for split in ("query", "gallery"):
        if verbose:
            print(f"Extracting {split} features")
        features[split] = extract_features(
            model, splits(split), flip=flip, verbose=verbose
        )
    query, gallery = features["query"], features["gallery"]
    results = {}
    for name in query.features:
        common = dict(
            query_features=query.features[name],
            gallery_features=gallery.features[name],
            query_pids=query.person_ids,
            gallery_pids=gallery.person_ids,
            query_camids=query.camera_ids,
            gallery_camids=gallery.camera_ids,
            metric=metric,
        )
        ranking = evaluate_features(**common)
        results[name] = {
            **{f"rank{k}": ranking.rank(k) for k in RANKS},
            "mAP": ranking.mAP_standard,
            "mAP_official": ranking.mAP_official,
            "mINP": ranking.mINP,
            "num_valid_queries": ranking.num_valid_queries,
            "cmc": ranking.cmc.tolist(),
        }
    return results


def format_results(results):
    """A markdown table: rank-k and mAP (%) per peer and the ensemble."""
    header = "| model | " + " | ".join(f"rank-{k}" for k in RANKS)
    lines = [header + " | mAP | mAP (official) | mINP |", "| --- |" + " ---: |" * 7]
    for name, r in results.items():
        cells = [r[f"rank{k}"] for k in RANKS] + [
            r["mAP"],
            r["mAP_official"],
            r["mINP"],
        ]
        lines.append(
            f"| {name} | " + " | ".join(f"{100 * c:.2f}" for c in cells) + " |"
        )
    return "\n".join(lines)


def plot_cmc(path, results, title):
    """A PNG of the CMC curve (rank 1..max) of every peer and the ensemble."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        cmc = 100 * np.asarray(r["cmc"])
        axes.plot(
            np.arange(1, len(cmc) + 1), cmc, label=f"{name} (rank-1 {cmc[0]:.1f}%)"
        )
    axes.set_xlabel("rank")
    axes.set_ylabel("matching rate (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    save_figure(figure, path)


def write_evaluation(directory, results, title):
    """`reid_results.md`, `reid_results.json` and `cmc.png` in `directory`."""
    table = format_results(results)
    atomic_write_text(os.path.join(directory, "reid_results.md"), table + "\n")
    write_json(os.path.join(directory, "reid_results.json"), results)
    plot_cmc(os.path.join(directory, "cmc.png"), results, title)
    return table


class Ranking:
    """A re-ID dataset's evaluation (`LoadedData.evaluation`): rank-k, mAP
    and mINP of every peer and the ensemble (`evaluate_cohort`), reported as
    `reid_results.md` / `.json` and `cmc.png` beside results.json."""

    compares_top1 = False  # Ranked, not classified: no top-1 to compare.

    def __init__(self, splits, *, metric="euclidean", flip=False):
        self.splits, self.metric, self.flip = splits, metric, flip

    def evaluate(self, model, verbose=0):
        results = evaluate_cohort(
            model, self.splits, metric=self.metric, flip=self.flip, verbose=verbose
        )
        return {"reid": results}

    def report(self, directory, evaluation, title):
        """Writes the table, JSON and CMC plot into `directory`; returns what
        results.json holds of them (the table, and every number but the CMC
        curve, which is in reid_results.json)."""
        table = write_evaluation(directory, evaluation["reid"], title)
        return {
            "table": table,
            "reid": {
                name: {key: v for key, v in r.items() if key != "cmc"}
                for name, r in evaluation["reid"].items()
            },
        }
