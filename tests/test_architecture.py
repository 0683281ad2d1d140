"""The house keeps its shape: keras_dml's imports, read from the source (no
import runs), flow one way between the wings that docs/ARCHITECTURE.md
draws, form no cycle, and sit inside functions only where they must be lazy
(with a comment saying why)."""

import ast
import collections
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "keras_dml")
ARCHITECTURE = os.path.join(REPO, "docs", "ARCHITECTURE.md")

# Imports inside functions that must stay lazy: (module, imported) pairs.
LAZY = {
    # JAX's step file imports jax, which refusing a run's devices must not.
    ("keras_dml.backends.jax", "keras_dml.cohort.steps.jax"),
    # The TensorFlow child that exports a JAX or PyTorch cohort.
    ("keras_dml.export", "keras_dml.export_process"),
    ("keras_dml.export_process", "keras_dml.export"),
    ("keras_dml.export_process", "keras_dml.saving"),
}


def _modules():
    found = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def _imports(modules):
    """`(module-level edges {module: {imported}}, [(module, imported, line,
    commented)] inside functions)`; `imported` is a keras_dml module."""
    edges, lazy = collections.defaultdict(set), []
    for module, path in modules.items():
        source = open(path).read()
        lines = source.splitlines()
        tree = ast.parse(source)
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "keras_dml"
            ):
                named = [f"{node.module}.{a.name}" for a in node.names]
                # A module by name, or a name from the module (or package).
                targets = [n if n in modules else node.module for n in named]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("keras_dml")]
            else:
                continue
            for target in (t for t in targets if t in modules and t != module):
                if id(node) in top_level:
                    edges[module].add(target)
                else:
                    lazy.append((module, target, node.lineno, _says_why(lines, node)))
    return edges, lazy


def _says_why(lines, node):
    """Whether a comment precedes the import in its function."""
    for line in reversed(lines[: node.lineno - 1]):
        if line.lstrip().startswith("#"):
            return True
        if line.lstrip().startswith(("def ", "async def ")):
            return False
    return False


def _wing(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "keras_dml"


def _drawn_arrows():
    """`{wing: {wings it imports}}` as docs/ARCHITECTURE.md draws them."""
    text = open(ARCHITECTURE).read()
    block = re.search(r"```text\n# imports\n(.*?)```", text, re.DOTALL).group(1)
    arrows = {}
    for line in block.strip().splitlines():
        wing, _, targets = line.partition(" -> ")
        arrows[wing.strip()] = {t.strip() for t in targets.split(",") if t.strip()}
    return arrows


def test_the_wings_import_as_architecture_md_draws_them():
    edges, _ = _imports(_modules())
    actual = collections.defaultdict(set)
    for module, targets in edges.items():
        for target in targets:
            if _wing(module) != _wing(target):
                actual[_wing(module)].add(_wing(target))
    assert dict(actual) == _drawn_arrows()


def test_no_import_cycle():
    edges, _ = _imports(_modules())
    visiting, done = set(), set()

    def visit(module, path):
        if module in done:
            return
        assert module not in visiting, " -> ".join(path + [module])
        visiting.add(module)
        for target in sorted(edges.get(module, ())):
            # A package imports its own modules; they import siblings, not it.
            visit(target, path + [module])
        visiting.discard(module)
        done.add(module)

    for module in sorted(edges):
        visit(module, [])


def test_the_cohort_and_the_readers_import_nothing_above_them():
    edges, _ = _imports(_modules())
    allowed = {
        "cohort": {"cohort", "checks"},
        "data": {"data", "files", "checks"},
        "files": {"files"},
        "checks": {"checks"},
    }
    for module, targets in edges.items():
        if _wing(module) in allowed:
            above = {_wing(t) for t in targets} - allowed[_wing(module)]
            assert not above, f"{module} imports {sorted(above)}"


def test_imports_inside_functions_are_the_lazy_ones_and_say_why():
    _, lazy = _imports(_modules())
    found = {(module, target) for module, target, _, _ in lazy}
    assert found == LAZY
    uncommented = [(m, t, line) for m, t, line, commented in lazy if not commented]
    assert not uncommented


def test_the_public_import_paths_keep_working():
    # Users' imports from before the cohort and the datasets had wings.
    import keras_dml
    import keras_dml.losses
    import keras_dml.mimicry
    from keras_dml.data import cifar10, load_mnist, market1501_dataset, read_cifar100
    from keras_dml.losses import mutual_learning_terms
    from keras_dml.mimicry import TemporalMean

    assert keras_dml.mimicry is keras_dml.cohort.mimicry
    assert keras_dml.losses.mutual_learning_terms is mutual_learning_terms
    assert TemporalMean is keras_dml.cohort.mimicry.TemporalMean
    assert read_cifar100 is keras_dml.datasets.cifar100.read_cifar100
    assert cifar10 is keras_dml.datasets.cifar10
    assert callable(load_mnist) and callable(market1501_dataset)
    assert keras_dml.MutualLearningModel is keras_dml.cohort.MutualLearningModel


# Where a backend's name may still be compared: two layers whose TensorFlow
# kernel is faster (the fused batch norm; the CIFAR shortcut as a
# convolution), and the TensorFlow child process checking what it runs on.
NAMES_A_BACKEND = {
    "keras_dml.models.batch_norm",
    "keras_dml.models.resnet_cifar",
    "keras_dml.export_process",
}


def test_each_backend_is_its_step_file_and_its_runtime_file():
    from keras_dml.cohort.steps import SUPPORTED_BACKENDS

    modules = _modules()
    for backend in SUPPORTED_BACKENDS:
        for module, name in (
            (f"keras_dml.cohort.steps.{backend}", "STEPS"),
            (f"keras_dml.backends.{backend}", "RUNTIME"),
        ):
            assert module in modules, f"{backend} has no {module}"
            assert re.search(rf"^{name} = ", open(modules[module]).read(), re.M)
    backend_name = re.compile(
        r'(==|!=) "(tensorflow|jax|torch)"|"(tensorflow|jax|torch)" (==|!=)'
    )
    for module, path in modules.items():
        if module.startswith(("keras_dml.backends", "keras_dml.cohort.steps")):
            continue
        if module in NAMES_A_BACKEND:
            continue
        for number, line in enumerate(open(path), 1):
            assert not backend_name.search(line), f"{path}:{number}: {line.strip()}"
