"""The house: imports only go down (scripts over segm/, no cycles), files that read in one sitting,
and models saved before segm/ existed still load."""
import ast
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("main", "benchmark", "download", "model", "load_data")
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def project_modules(root):
    """{dotted module name: path} of every script at the top of root and every module of segm/."""
    found = {p.stem: p for p in root.glob("*.py")}
    for path in (root / "segm").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(path, known):
    """The project modules that path imports anywhere in it, inside functions too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def import_graph(root):
    modules = project_modules(root)
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def cycle_in(graph):
    """One import cycle as a list of modules, or None (depth-first search)."""
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def upward_imports(graph):
    """(module, script) pairs where a module of segm/ imports a script above it."""
    return [(name, target) for name, targets in graph.items() if name.startswith("segm")
            for target in targets if not target.startswith("segm")]


def test_imports_only_go_down():
    graph = import_graph(ROOT)
    assert {"main", "model", "load_data", "segm.runs", "segm.tf_quiet",
            "segm.benchmarks.rotation"} <= set(graph)
    assert "segm.benchmarks.rotation" in graph["benchmark"]
    assert upward_imports(graph) == []
    assert cycle_in(graph) is None, " -> ".join(cycle_in(graph))
    assert graph["segm.tf_quiet"] == set()  # the quiet TensorFlow import is the bottom floor


def test_the_checks_catch_a_planted_cycle_and_an_upward_import(tmp_path):
    (tmp_path / "segm").mkdir()
    (tmp_path / "main.py").write_text("import model\n")
    (tmp_path / "model.py").write_text("from segm import runs\n")
    (tmp_path / "segm" / "__init__.py").write_text("")
    (tmp_path / "segm" / "runs.py").write_text("def f():\n    import segm.files\n")
    (tmp_path / "segm" / "files.py").write_text("from segm.runs import f\n")
    graph = import_graph(tmp_path)
    assert cycle_in(graph) in (["segm.files", "segm.runs", "segm.files"],
                               ["segm.runs", "segm.files", "segm.runs"])
    assert upward_imports(graph) == []
    (tmp_path / "segm" / "files.py").write_text("def g():\n    import main\n")
    graph = import_graph(tmp_path)
    assert cycle_in(graph) == ["main", "model", "segm.runs", "segm.files", "main"]
    assert upward_imports(import_graph(tmp_path)) == [("segm.files", "main")]


def test_the_top_level_shows_the_trio():
    allowed = {"main.py", "model.py", "load_data.py", "download.py", "benchmark.py", "README.md",
               "RESULTS.md", "requirements.txt", "requirements-dev.txt", "requirements-onnx.txt",
               "segmentation.ipynb", "segm", "tests", "im", "data", ".ci", ".gitignore", ".git"}
    tracked = {p.name for p in ROOT.iterdir()} - {"__pycache__", ".pytest_cache"}
    assert {name for name in tracked if not name.startswith(".venv")} <= allowed


def test_every_file_reads_in_one_sitting():
    lengths = {p.relative_to(ROOT): len(p.read_text().splitlines())
               for p in [*ROOT.glob("*.py"), *(ROOT / "segm").rglob("*.py"),
                         *(ROOT / "tests").glob("*.py")]}
    assert {str(p): n for p, n in lengths.items() if n > 450} == {}
    assert lengths[Path("main.py")] <= 400 and lengths[Path("model.py")] <= 400


def test_a_model_saved_before_the_move_loads_and_gives_the_same_outputs():
    import model
    from segm.tf_quiet import keras
    # Made by the code of commit 12e1f26, before segm/ existed: every custom layer, tiny.
    old = keras.saving.load_model(FIXTURES / "legacy_layers.keras")
    x = np.load(FIXTURES / "legacy_layers_input.npy")
    np.testing.assert_allclose(old(x, training=False).numpy(),
                               np.load(FIXTURES / "legacy_layers_output.npy"), atol=1e-5)
    kinds = {type(layer).__name__ for layer in old.layers}
    assert {"PyramidChebConv", "GraphPool", "GraphUnpool", "RegionGraph", "RegionChebConv",
            "GraphConv", "ChebConv", "DirectionalGraphConv"} <= kinds
    # A checkpoint written by that commit's main.py: the model, its loss and optimizer.
    run = model.load_model(FIXTURES / "legacy_fcn_run.keras")
    assert run.name == "fcn" and int(run.optimizer.iterations.numpy()) == 2
    assert type(run.loss).__name__ == "SegmentationLoss"
