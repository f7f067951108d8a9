"""The package's shape, as `docs/architecture.md` draws it: imports flow one way, with no cycles.

    core (config, layers, model, views, visualize, preprocessing, images, files, run_folder)
      -> checkpoints/, builders -> deploy/ -> training/ -> cli

Read from the source with `ast`, function-level imports included, so a cycle
cannot hide inside a function. `keras_vit/__init__.py` is the public facade and
may import from any layer, as may `keras_vit/_public.py`, which holds its imports (the
`keras-vit` command defers them until its arguments are parsed).
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.fast  # the edit loop's tier: `pytest -m fast`

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_vit"
RANKS = {
    "checkpoints": 1,
    "builders": 1,
    "deploy": 2,
    "training": 3,
    "cli": 4,
}  # everything else in the package: the core, 0


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path):
    """The keras_vit modules a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("keras_vit")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_vit"):
            # `from keras_vit.checkpoints import formats` imports keras_vit.checkpoints.formats, which
            # `resolve` keeps where such a module exists (and drops `.load_weights` for a function).
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def resolve(target):
    """`keras_vit.preprocessing.preprocessing_model` -> `keras_vit.preprocessing`, its module."""
    while target not in GRAPH and "." in target:
        target = target.rpartition(".")[0]
    return target


def _rank(module):
    parts = module.split(".")
    return RANKS.get(parts[1], 0) if len(parts) > 1 else 0


GRAPH = {_module_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}
FACADE = ("keras_vit", "keras_vit._public")


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m not in FACADE))
def test_imports_flow_from_the_core_outwards(module):
    inward = sorted({resolve(t) for t in GRAPH[module]} - {"keras_vit"})
    inward = [target for target in inward if _rank(target) > _rank(module)]
    assert not inward, (
        f"{module} imports {inward}, which sit further out (core -> checkpoints -> deploy -> training -> cli)"
    )


def test_no_import_cycles():
    edges = {m: {resolve(t) for t in targets} - {m, *FACADE} for m, targets in GRAPH.items() if m not in FACADE}
    visiting, done = [], set()

    def visit(module):
        if module in visiting:
            cycle = visiting[visiting.index(module) :] + [module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        visiting.append(module)
        for target in sorted(edges.get(module, ())):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(edges):
        visit(module)


def test_importing_keras_vit_imports_no_tensorflow():
    """On a backend other than TensorFlow (whose Keras imports it, of course)."""
    code = "import sys, keras_vit; assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'"
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
