"""The paper's CIFAR-100 table, reproduced: Independent vs DML for each pair,
next to the paper's numbers."""

import os

from keras_dml.files import atomic_write_text, ensure_writable_dir, writing
from keras_dml.training import compare

# Zhang et al. (2018), Table 1, CIFAR-100 top-1 (%):
# (net1, net2) -> ((net1 independent, net1 DML), (net2 independent, net2 DML)).
PAPER_CIFAR100 = {
    ("resnet32", "resnet32"): ((68.99, 71.19), (68.99, 70.75)),
    ("mobilenet_cifar", "resnet32"): ((73.65, 76.13), (68.99, 71.10)),
    ("mobilenet_cifar", "mobilenet_cifar"): ((73.65, 76.21), (73.65, 76.10)),
    ("wide_resnet", "resnet32"): ((78.69, 78.96), (68.99, 70.73)),
    ("wide_resnet", "mobilenet_cifar"): ((78.69, 80.28), (73.65, 77.39)),
    ("wide_resnet", "wide_resnet"): ((78.69, 80.28), (78.69, 80.08)),
}
PAIRS = tuple("+".join(pair) for pair in PAPER_CIFAR100)


def parse_pairs(text_pairs):
    """["resnet32+resnet32", ...] -> [("resnet32", "resnet32"), ...]."""
    pairs = []
    for text in text_pairs:
        pair = tuple(text.split("+"))
        if len(pair) != 2 or not all(pair):
            raise ValueError(
                f"--pairs: {text!r} is not two peers joined by '+'. "
                f"Valid pairs from the paper: {', '.join(PAIRS)}"
            )
        pairs.append(pair)
    return pairs


def variants(pair, model_dir):
    """The pair's variant table: independent, then DML (its curves drawn
    beside the independent run's), in `<model_dir>/<pair>/{independent,dml}`
    for the run's one seed."""
    folder = os.path.join(model_dir, "+".join(pair))
    independent_dir = os.path.join(folder, "independent")
    return [
        compare.Variant(
            "independent",
            {"peers": pair, "independent": True},
            lambda seed: independent_dir,
        ),
        compare.Variant(
            "DML",
            {"peers": pair, "compare_dir": independent_dir},
            lambda seed: os.path.join(folder, "dml"),
        ),
    ]


def run_pair(pair, base, model_dir, print_fn=print):
    """Runs the pair independently and with DML (each resumable on its own),
    from `base.seed`; returns {"independent": results, "DML": results}."""
    results = compare.run_variants(
        base, variants(pair, model_dir), [base.seed], model_dir, print_fn
    )
    return {label: runs[0] for label, runs in results.items()}


def _cell(ours, paper):
    measured = f"{100 * ours:.2f}" if ours is not None else "-"
    return f"{measured} ({paper:.2f})" if paper is not None else measured


def format_table(rows, epochs):
    """Markdown: per pair and peer, Independent -> DML top-1, ours (paper)."""
    lines = [
        "| peers | net1 independent | net1 DML | net2 independent | net2 DML | "
        "ensemble independent | ensemble DML |",
        "| --- |" + " ---: |" * 6,
    ]
    for pair, results in rows:
        paper = PAPER_CIFAR100.get(pair, ((None, None), (None, None)))
        cells = []
        for i in range(2):
            for label, column in (("independent", 0), ("DML", 1)):
                cells.append(
                    _cell(results[label]["top1"][f"peer{i}"], paper[i][column])
                )
        for label in ("independent", "DML"):
            cells.append(_cell(results[label]["top1"]["ensemble"], None))
        lines.append(f"| {' + '.join(pair)} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"CIFAR-100 test top-1 (%) after {epochs} epochs: ours (the paper's in "
        "parentheses, Zhang et al. 2018, Table 1)."
    )
    return "\n".join(lines)


def reproduce_table(pairs, base, model_dir, print_fn=print):
    """Runs every pair and writes `model_dir/table.md`; returns the table."""
    ensure_writable_dir(model_dir, "--model_dir")
    rows = [(pair, run_pair(pair, base, model_dir, print_fn)) for pair in pairs]
    table = format_table(rows, base.epochs)
    with writing(model_dir):
        atomic_write_text(os.path.join(model_dir, "table.md"), table + "\n")
    return table
