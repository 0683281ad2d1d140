"""The DML paper's experiments on one dataset, as one resumable command.

Zhang et al. (CVPR 2018) make four claims; each part below tests one, over
paired seeds (for every seed, every variant starts from the same initial
weights and sees the same batches):

- a: every peer of a DML cohort ends up better than trained alone, for
  pairs small+small, small+large and large+large (the paper's Table 1);
- b: DML of a small and a large network beats distilling the large one,
  pre-trained and frozen, into the small one (the paper's Table 4);
- c: larger cohorts help more: mean peer accuracy and ensemble accuracy for
  K = 1..4 peers of one architecture (the paper's Figure 5);
- d: why: DML peers have higher-entropy posteriors and sit in wider minima,
  the training loss rising less under Gaussian weight noise (Figure 4).

Every run is an ordinary run of `keras_dml.training.run.run` under
`<output_dir>/<part>/...`, resumable on its own; parts reuse each other's
runs (b's independent student and DML pair are a's small+large runs, its
teacher is a's independently trained large network of the same seed; c's
K = 1 is a's small+small independent pair). Each part writes `table.md`,
its figure and `results.json`; `report.md` gathers the tables, the regime
(training accuracy reached) and the time taken.
"""

import os
import statistics
import time

import keras
import numpy as np

from keras_dml import analysis, datasets, files
from keras_dml.figures import save_figure
from keras_dml.training import compare, reports

PARTS = ("a", "b", "c", "d")
COHORT_SIZES = (1, 2, 3, 4)
# Weight-noise standard deviations of part d (the peers' kernels are of
# order 0.1: from no visible effect to destroying what was learned).
SIGMAS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)


def pairs(small, large):
    """The paper's three pairings of a small and a large network."""
    return {
        "small+small": (small, small),
        "small+large": (small, large),
        "large+large": (large, large),
    }


def _pair_dir(output_dir, name):
    return os.path.join(output_dir, "a", name)


def _run_dir(output_dir, name, seed, label):
    return compare.run_folder(_pair_dir(output_dir, name), seed, label)


def _scores(results, columns):
    """{column: top-1} of one run, its peers renamed by position."""
    top1 = results["top1"]
    return {column: top1[key] for column, key in columns.items()}


def _training_accuracy(runs):
    """Mean over runs and peers of the last epoch's training top-1 (logged
    under augmentation, in training mode): the regime the runs are in."""
    values = []
    for outcome in runs:
        last = outcome["history"][-1]
        values += [
            v
            for k, v in last.items()
            if k.startswith("peer") and k.endswith("_accuracy")
        ]
    return statistics.fmean(values) if values else float("nan")


def part_a(base, small, large, seeds, output_dir, print_fn=print):
    """Independent vs DML for each pairing; returns {pair: {label: runs}}
    and {pair: its table}."""
    everything, tables = {}, {}
    for name, peers in pairs(small, large).items():
        variants = [
            ("independent", {"peers": peers, "independent": True}),
            ("DML", {"peers": peers}),
        ]
        results = compare.run_variants(
            base, variants, seeds, _pair_dir(output_dir, name), print_fn=print_fn
        )
        summary = compare.write_comparison(
            _pair_dir(output_dir, name), results, f"{name}: {' + '.join(peers)}"
        )
        everything[name], tables[name] = results, summary["table"]
    return everything, tables


def _in_part_a(output_dir, name, label):
    """`seed -> folder` of part a's run of pairing `name`, `label`: the
    parts share runs."""
    return lambda seed: _run_dir(output_dir, name, seed, label)


def part_b(base, small, large, seeds, output_dir, print_fn=print):
    """The small network alone, distilled from the frozen large one, and in
    DML with it; returns {label: [{column: top-1}] per seed} and the
    teacher's accuracies."""

    def small_peer(outcome):
        return {small: outcome["top1"]["peer0"]}

    teacher_dir = _in_part_a(output_dir, "large+large", "independent")
    variants = [
        compare.Variant(
            "independent",
            {"peers": (small, large), "independent": True},
            _in_part_a(output_dir, "small+large", "independent"),
            small_peer,
        ),
        # The teacher: part a's large network trained alone, of the same seed.
        compare.Variant(
            "teacher",
            {"peers": (large, large), "independent": True},
            teacher_dir,
            lambda outcome: {large: outcome["top1"]["peer0"]},
        ),
        compare.Variant(
            "distillation",
            lambda seed: {
                "peers": (small,),
                "teacher": os.path.join(teacher_dir(seed), "cohort.keras"),
                "teacher_peer": 0,
            },
            lambda seed: os.path.join(output_dir, "b", f"seed{seed}", "distillation"),
            small_peer,
        ),
        compare.Variant(
            "DML",
            {"peers": (small, large)},
            _in_part_a(output_dir, "small+large", "DML"),
            small_peer,
        ),
    ]
    results = compare.run_variants(
        base, variants, seeds, os.path.join(output_dir, "b"), print_fn=print_fn
    )
    scores = {
        v.label: [v.scored(outcome) for outcome in results[v.label]]
        for v in variants
        if v.label != "teacher"
    }
    teacher_top1 = [outcome["top1"]["peer0"] for outcome in results["teacher"]]
    return scores, teacher_top1


def _cohort_size_scores(k):
    """Mean peer and ensemble top-1 of a cohort of K = k peers; a single
    network (K = 1, one of an independent pair) is its own ensemble."""

    def scores(outcome):
        peers = [v for key, v in outcome["top1"].items() if key != "ensemble"]
        mean_peer = statistics.fmean(peers)
        ensemble = mean_peer if k == 1 else outcome["top1"]["ensemble"]
        return {"mean peer": mean_peer, "ensemble": ensemble}

    return scores


def part_c(base, small, seeds, output_dir, print_fn=print):
    """DML cohorts of K = 1..4 peers of `small`; returns {"K=k": [{"mean
    peer": ..., "ensemble": ...}] per seed}. K = 1 is the independent
    small+small pair of part a (its peers' mean, each a network alone), K = 2
    its DML pair."""
    variants = []
    for k in COHORT_SIZES:
        if k == 1:
            changes = {"peers": (small, small), "independent": True}
            folder = _in_part_a(output_dir, "small+small", "independent")
        elif k == 2:
            changes = {"peers": (small, small)}
            folder = _in_part_a(output_dir, "small+small", "DML")
        else:
            changes = {"peers": (small,) * k}
            folder = lambda seed, k=k: os.path.join(  # noqa: E731
                output_dir, "c", f"seed{seed}", f"K{k}"
            )
        variants.append(
            compare.Variant(f"K={k}", changes, folder, _cohort_size_scores(k))
        )
    results = compare.run_variants(
        base, variants, seeds, os.path.join(output_dir, "c"), print_fn=print_fn
    )
    return {
        v.label: [v.scored(outcome) for outcome in results[v.label]] for v in variants
    }


def part_d(base, pair, seeds, output_dir, sigmas=SIGMAS, max_train=2000):
    """Posterior entropy (test set) and training loss under weight noise of
    the independent and DML runs of part a's `pair`; returns
    {label: {"entropy": [per seed, mean over peers], "noise": [per seed,
    [mean over peers per sigma]]}}."""
    data = datasets.get(base.dataset).load(base.replace(seed=0))
    train = _first_examples(data.train_batches, max_train)
    measured = {}
    for label in ("independent", "DML"):
        entropy, noise = [], []
        for seed in range(seeds):
            folder = _run_dir(output_dir, pair, seed, label)
            keras.backend.clear_session()
            model = keras.saving.load_model(os.path.join(folder, "cohort.keras"))
            entropy.append(
                statistics.fmean(analysis.posterior_entropy(model, data.test_batches))
            )
            losses = analysis.loss_under_weight_noise(model, train, sigmas, seed=seed)
            noise.append(losses.mean(axis=0).tolist())
        measured[label] = {"entropy": entropy, "noise": noise}
    return measured


def _first_examples(batches, limit):
    images, labels = [], []
    count = 0
    for x, y in batches:
        images.append(np.asarray(x))
        labels.append(np.asarray(y))
        count += len(labels[-1])
        if count >= limit:
            break
    return np.concatenate(images)[:limit], np.concatenate(labels)[:limit]


# ------------------------------------------------------------------ reports


def _mean_std(values):
    return statistics.fmean(values), (
        statistics.stdev(values) if len(values) > 1 else 0.0
    )


def _plot_cohort_sizes(path, scores, title):
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    sizes = [int(label[2:]) for label in scores]
    for column, marker in (("mean peer", "o"), ("ensemble", "s")):
        stats = [_mean_std([100 * s[column] for s in scores[k]]) for k in scores]
        axis.errorbar(
            sizes,
            [m for m, _ in stats],
            yerr=[s for _, s in stats],
            marker=marker,
            capsize=3,
            label=column,
        )
    axis.set_xticks(sizes)
    axis.set_xlabel("peers in the cohort (K; K = 1: trained alone)")
    axis.set_ylabel("test top-1 (%)")
    axis.set_title(title)
    axis.legend()
    axis.grid(alpha=0.3)
    save_figure(figure, path)


def _plot_analysis(path, measured, sigmas, title):
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels = list(measured)
    stats = [_mean_std(measured[label]["entropy"]) for label in labels]
    left.bar(labels, [m for m, _ in stats], yerr=[s for _, s in stats], capsize=4)
    left.set_ylabel("mean entropy of the test posteriors (nats)")
    left.set_title("posterior entropy")
    for label, style in zip(labels, ("--", "-")):
        curves = np.asarray(measured[label]["noise"])
        right.errorbar(
            sigmas,
            curves.mean(axis=0),
            yerr=curves.std(axis=0, ddof=1) if len(curves) > 1 else None,
            linestyle=style,
            marker="o",
            capsize=3,
            label=label,
        )
    right.set_yscale("log")  # From 0.01 (sigma 0) to hundreds.
    right.set_xlabel("sigma of the Gaussian noise added to every weight")
    right.set_ylabel("training loss (cross-entropy)")
    right.set_title("loss under weight noise (wider minimum: flatter)")
    right.legend()
    right.grid(alpha=0.3)
    figure.suptitle(title)
    save_figure(figure, path)


def _analysis_table(measured, sigmas, seeds):
    labels = list(measured)
    header = "| | entropy (nats) | " + " | ".join(f"σ={s:g}" for s in sigmas) + " |"
    lines = [header, "| --- |" + " ---: |" * (1 + len(sigmas))]
    for label in labels:
        cells = ["{:.3f} ± {:.3f}".format(*_mean_std(measured[label]["entropy"]))]
        curves = np.asarray(measured[label]["noise"])
        cells += [
            "{:.3f} ± {:.3f}".format(*_mean_std(list(curves[:, i])))
            for i in range(len(sigmas))
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ours, theirs = measured[labels[1]], measured[labels[0]]
    cells = [
        "{:+.3f} ± {:.3f}".format(
            *_mean_std([a - b for a, b in zip(ours["entropy"], theirs["entropy"])])
        )
    ]
    for i in range(len(sigmas)):
        differences = [a[i] - b[i] for a, b in zip(ours["noise"], theirs["noise"])]
        cells.append("{:+.3f} ± {:.3f}".format(*_mean_std(differences)))
    lines.append(f"| {labels[1]} - {labels[0]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Mean over each cohort's peers, then mean ± std over {seeds} seed(s); "
        "the difference is paired per seed. Loss: cross-entropy on training "
        "images (no augmentation) with N(0, σ²) added to every trainable weight, "
        "3 draws per σ.",
    ]
    return "\n".join(lines)


def _write(folder, table, results, figure=None):
    files.ensure_writable_dir(folder, "--output_dir")
    with files.writing(folder):
        files.atomic_write_text(os.path.join(folder, "table.md"), table + "\n")
        files.write_json(os.path.join(folder, "results.json"), results)
        if figure is not None:
            figure()


def reproduce(base, small, large, seeds, output_dir, parts=PARTS, print_fn=print):
    """Runs the requested parts (a is run first when b, c or d need its
    runs; finished runs are only evaluated again) and writes every report.

    Returns:
        The text of `report.md`.
    """
    started = time.time()
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(
            f"--parts must be among {', '.join(PARTS)}. Received: {unknown}"
        )
    if not datasets.get(base.dataset).evaluation.compares_top1:
        raise ValueError(
            f"--dataset={base.dataset} is evaluated by ranking; the paper's "
            "experiments here compare top-1 accuracy."
        )
    files.ensure_writable_dir(output_dir, "--output_dir")
    sections = [
        f"# DML on {base.dataset}: the paper's experiments",
        "",
        f"small = {small}, large = {large}; {seeds} paired seed(s); "
        f"{base.epochs} epochs, batch {base.batch_size}, {base.optimizer} lr "
        f"{base.lr}, train_size {base.train_size or 'all'}, validation_size "
        f"{base.validation_size}, T = {base.temperature}, kl_weight "
        f"{base.kl_weight}. Test top-1 (%) is reported; the validation split "
        "held out of the training set is what the curves show.",
    ]
    everything, tables = part_a(base, small, large, seeds, output_dir, print_fn)
    regime = {
        name: {label: _training_accuracy(runs) for label, runs in results.items()}
        for name, results in everything.items()
    }
    sections += ["", "## a. Independent vs DML (the paper's Table 1)", ""]
    for name, table in tables.items():
        networks = " + ".join(pairs(small, large)[name])
        sections += [f"### {name}: {networks}", "", table, ""]
    sections.append(
        "Training top-1 at the last epoch (as logged while training, in training "
        "mode), the regime: "
        + "; ".join(
            f"{name} " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in r.items())
            for name, r in regime.items()
        )
        + "."
    )
    if "b" in parts:
        scores, teacher = part_b(base, small, large, seeds, output_dir, print_fn)
        table = compare.format_table(scores, seeds)
        mean, std = _mean_std([100 * t for t in teacher])
        table += (
            f"\n\nThe teacher: {large} trained alone (part a's large+large "
            f"independent peer 0 of the same seed), test top-1 {mean:.2f} ± "
            f"{std:.2f}%."
        )
        _write(
            os.path.join(output_dir, "b"),
            table,
            {"scores": scores, "teacher_top1": teacher, "table": table},
        )
        sections += [
            "",
            f"## b. DML vs distillation from a pre-trained {large} (Table 4)",
            "",
            table,
        ]
    if "c" in parts:
        scores = part_c(base, small, seeds, output_dir, print_fn)
        table = compare.format_table(scores, seeds)
        folder = os.path.join(output_dir, "c")
        _write(
            folder,
            table,
            {"scores": scores, "table": table},
            lambda: _plot_cohort_sizes(
                os.path.join(folder, "cohort_sizes.png"),
                scores,
                f"DML cohorts of {small} on {base.dataset}",
            ),
        )
        sections += ["", f"## c. Cohort size: K {small} peers (Figure 5)", "", table]
    if "d" in parts:
        measured = part_d(base, "small+small", seeds, output_dir)
        table = _analysis_table(measured, SIGMAS, seeds)
        folder = os.path.join(output_dir, "d")
        _write(
            folder,
            table,
            {"measured": measured, "sigmas": list(SIGMAS), "table": table},
            lambda: _plot_analysis(
                os.path.join(folder, "analysis.png"),
                measured,
                SIGMAS,
                f"{small} + {small} on {base.dataset}, {seeds} seed(s)",
            ),
        )
        sections += [
            "",
            f"## d. Why: posterior entropy and minimum width, {small}+{small} "
            "(Figure 4)",
            "",
            table,
        ]
    seconds = time.time() - started
    sections += ["", f"This command took {seconds / 60:.1f} minutes."]
    report = "\n".join(sections) + "\n"
    with files.writing(output_dir):
        files.atomic_write_text(os.path.join(output_dir, "report.md"), report)
        files.write_json(
            os.path.join(output_dir, "results.json"),
            {
                "regime_train_top1": regime,
                "seconds": seconds,
                "config": base.asdict(),
                "versions": reports.versions(),
            },
        )
    return report
