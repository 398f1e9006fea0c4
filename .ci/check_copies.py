"""Keep the code that transformers needs copied into each modeling file identical to its source.

A file under hf_ssl/models/ travels alone (with its relative imports) when a checkpoint is loaded with
`trust_remote_code=True`, so some classes are written out in several files instead of imported from one. As in
transformers' `utils/check_copies.py`, such a class or function starts with a marker line

    # Copied from hf_ssl.models.modeling_alexnet.AlexNetPreTrainedModel with AlexNet->VGG, alexnet->vgg

and this script checks that its code is the source's code with the replacements applied (in order, each a plain
string replacement). `python .ci/check_copies.py` lists every copy that drifted and exits 1; `--fix` rewrites
the copies from their sources.
"""

import argparse
import ast
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^(?P<indent>\s*)# Copied from (?P<source>[\w.]+)(?: with (?P<replace>.+))?$")


def _definitions(path: pathlib.Path) -> dict[str, tuple[int, int]]:
    """Class, function and method names of a file (`Name`, `Class.method`) -> (first line, last line), 1-based,
    decorators included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    spans = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                spans[prefix + node.name] = (first, node.end_lineno)
                if isinstance(node, ast.ClassDef):
                    visit(node.body, f"{prefix}{node.name}.")

    visit(tree.body, "")
    return spans


def _source_code(root: pathlib.Path, dotted: str) -> str:
    """The code of `package.module.Name` or `package.module.Class.method` under `root`."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest module path that is a file
        path = root / ("/".join(parts[:cut]) + ".py")
        if path.is_file():
            break
    else:
        raise ValueError(f"# Copied from {dotted}: no module file for it under {root}")
    name = ".".join(parts[cut:])
    spans = _definitions(path)
    if name not in spans:
        raise ValueError(f"# Copied from {dotted}: {path.relative_to(root)} defines no {name}")
    first, last = spans[name]
    return "".join(path.read_text().splitlines(keepends=True)[first - 1 : last])


def _replacements(spec: str | None) -> list[tuple[str, str]]:
    pairs = []
    for item in (spec or "").split(","):
        if item.strip():
            old, arrow, new = item.strip().partition("->")
            if not arrow:
                raise ValueError(f"'with {spec}': each replacement is Old->New")
            pairs.append((old, new))
    return pairs


def check_file(path: pathlib.Path, root: pathlib.Path, fix: bool = False) -> list[str]:
    """Problems of the copies in one file (one line each); with `fix`, rewrite the drifted copies."""
    lines = path.read_text().splitlines(keepends=True)
    spans = {first: (name.rpartition(".")[2], last) for name, (first, last) in _definitions(path).items()}
    problems, out, i = [], [], 0
    while i < len(lines):
        match = MARKER.match(lines[i].rstrip("\n"))
        out.append(lines[i])
        i += 1
        if not match:
            continue
        where = f"{path.relative_to(root)}:{i}"
        if i + 1 not in spans:
            problems.append(f"{where}: '# Copied from' must stand right above a class or def")
            continue
        name, last = spans[i + 1]
        expected = _source_code(root, match["source"])
        for old, new in _replacements(match["replace"]):
            expected = expected.replace(old, new)
        actual = "".join(lines[i:last])
        if actual != expected:
            problems.append(f"{where}: {name} differs from its source {match['source']}")
            if fix:
                out.append(expected)
                i = last
    if fix and problems:
        path.write_text("".join(out))
    return problems


def check(root: pathlib.Path = ROOT, fix: bool = False) -> list[str]:
    """Problems of every copy under root/hf_ssl."""
    problems = []
    for path in sorted((root / "hf_ssl").rglob("*.py")):
        problems += check_file(path, root, fix)
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fix", action="store_true", help="rewrite drifted copies from their sources")
    args = parser.parse_args()
    try:
        problems = check(ROOT, args.fix)
    except ValueError as error:
        sys.exit(f"check_copies: {error}")
    for problem in problems:
        print(problem)
    if problems and not args.fix:
        sys.exit(f"check_copies: {len(problems)} copies differ from their sources (python .ci/check_copies.py --fix)")


if __name__ == "__main__":
    main()
