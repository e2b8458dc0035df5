"""The layout's rules, checked on the tree: no module over 400 lines, no import cycle between modules, and every
file a run directory holds named in one module (harness.common.run_dir)."""

import ast
import re
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "harness"


def modules() -> dict[str, Path]:
    out = {}
    for path in HARNESS.rglob("*.py"):
        parts = list(path.relative_to(HARNESS.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports anywhere (top level or inside functions)."""
    found = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only, never imported at run time
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            for alias in node.names:  # `from harness.x import y`: y may be a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
    return found & known


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    seen, stack, out = set(), [], []

    def visit(node):
        if node in stack:
            out.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    return out


def test_no_module_is_over_400_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 400}
    assert not long, long


def test_no_import_cycle_between_modules():
    mods = modules()
    graph = {name: imports_of(path, set(mods)) - {name} for name, path in mods.items()}
    # a package's __init__ imports its own modules (the objective registry discovers them): not a cycle of code
    graph = {k: {v for v in vs if not (k.startswith(v + ".") and mods[v].name == "__init__.py")} for k, vs in graph.items()}
    assert not cycles(graph), cycles(graph)[:3]


def test_the_cycle_check_can_fail():
    assert cycles({"a": {"b"}, "b": {"a"}}) and not cycles({"a": {"b"}, "b": set()})


def test_run_directory_file_names_live_in_one_module():
    names = ("rounds.csv", "evals.csv", "summary.json", "config.json", "checkpoint.pt", "class_hist.json", "strip.png")
    spelled = {}
    for name, path in modules().items():
        if name == "harness.common.run_dir":
            continue
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        tree = ast.parse(code)
        doc_nodes = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
                     and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in doc_nodes \
                    and node.value in names:
                spelled.setdefault(name, []).append(node.value)
    assert not spelled, spelled


def test_the_readme_layout_table_matches_the_tree():
    """Every module is a row of the README's Layout table, and every harness path the table names exists."""
    readme = (HARNESS.parent / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `(harness/[\w/.]*)` \|", layout, flags=re.M))
    files = {str(p.relative_to(HARNESS.parent)) for p in HARNESS.rglob("*.py") if p.name != "__init__.py"}
    assert not files - named, f"modules missing from the README's Layout table: {sorted(files - named)}"
    assert all((HARNESS.parent / n).exists() for n in named), [n for n in named if not (HARNESS.parent / n).exists()]
