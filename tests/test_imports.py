"""The shape of hf_ssl's imports: no cycle between its modules, and the Hub side without the training stack."""

import ast
import pathlib
import subprocess
import sys

import hf_ssl

PACKAGE = pathlib.Path(hf_ssl.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the hf_ssl modules it names in a relative import}, anywhere in the file (late imports count)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            base = f"{base}.{node.module}" if node.module else base
            for alias in node.names:  # `from . import x` / `from .pkg import submodule` name modules
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"hf_ssl.hub.card", "hf_ssl.training.loop", "hf_ssl.run_layout"} <= graph.keys()
    assert "hf_ssl.run_layout" in graph["hf_ssl.hub.card"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _loaded_after(statement: str, modules: set[str]) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(set(sys.modules) & {modules!r})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_the_hub_side_imports_without_the_training_stack():
    heavy = {"accelerate", "kornia", "av", "faiss", "datasets", "hf_ssl.training", "hf_ssl.data"}
    # transformers' modeling_utils imports accelerate itself when it is installed: not hf_ssl's doing
    from_transformers = _loaded_after("import transformers.modeling_utils", heavy)
    assert _loaded_after("import hf_ssl.hub", heavy) <= from_transformers
