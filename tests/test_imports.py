"""No import cycle inside the package: the import graph of ``gigsterpg/``, read from the source (``ast``).

Every import counts, at module level or inside a function (one hidden in a function is still a cycle to the
reader): ``import gigsterpg.x``, ``from gigsterpg.x import y`` (an edge to ``gigsterpg.x.y`` when ``y`` is a
module, else to ``gigsterpg.x``) and relative imports. Importing ``gigsterpg.a.b`` runs ``gigsterpg/a/__init__``
first, but that implied edge is not counted: a package's ``__init__`` that lists its own submodules (the
registries) would otherwise be a cycle with each of them. Nor are imports under ``if TYPE_CHECKING:``: they never
run, they name the type of an annotation (the mapped classes' relationships point both ways).
"""
import ast
from pathlib import Path
from typing import Dict, List, Set

import gigsterpg

PACKAGE = Path(gigsterpg.__file__).parent


def modules(root: Path) -> Dict[str, Path]:
    """{dotted name: file} of every module under ``root`` (a package ``a/b/__init__.py`` is ``a.b``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _run_time_nodes(tree: ast.AST):
    """Every node of ``tree`` (``ast.walk``), but not the body of an ``if TYPE_CHECKING:`` (its ``else`` runs)."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        if _type_checking(node):
            pending.extend(node.orelse)
        else:
            pending.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The modules of ``known`` that the module ``name`` (its source at ``path``) imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _run_time_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in known else base)
    return {module for module in found if module in known and module != name}


def import_graph(root: Path) -> Dict[str, Set[str]]:
    known = modules(root)
    return {name: imports_of(name, path, set(known)) for name, path in known.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected group of modules, the shortest through its first."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[Set[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm; the graph is small, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    found = []
    for group in groups:
        start = min(group)
        paths = {start: [start]}
        frontier = [start]
        while frontier and start not in {other for node in frontier for other in graph[node]}:
            following = []
            for node in frontier:
                for other in sorted(graph[node] & group):
                    if other not in paths:
                        paths[other] = paths[node] + [other]
                        following.append(other)
            frontier = following
        last = min(node for node in frontier if start in graph[node])
        found.append(paths[last] + [start])
    return sorted(found)


def test_the_package_has_no_import_cycle():
    found = cycles(import_graph(PACKAGE))
    assert not found, "import cycles in gigsterpg/ (move the shared piece to a module both import):\n" + "\n".join(
        " -> ".join(cycle) for cycle in found)


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """The check can fail: a package whose cycles are made by each kind of import it must see."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "import pkg.b\n",
        "b.py": "def later():\n    from pkg import a\n",  # inside a function; ``a`` is a module
        "c.py": "from .sub.d import thing\n",  # relative
        "sub/__init__.py": "",
        "sub/d.py": "from ..c import other\nthing = 1\n",  # relative, two levels; ``other`` is a name
        "e.py": "from pkg.sub import d\n",  # no cycle: e -> sub.d only
        "f.py": "import os\nfrom typing import List\n",  # outside the package: no edge
        "g.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import h\n",  # never runs
        "h.py": "import pkg.g\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    graph = import_graph(root)
    assert graph["pkg.e"] == {"pkg.sub.d"} and graph["pkg.f"] == set() and graph["pkg.g"] == set()
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"], ["pkg.c", "pkg.sub.d", "pkg.c"]]


def test_a_cycle_is_named_through_every_module_in_it():
    graph = {"m.a": {"m.b"}, "m.b": {"m.c"}, "m.c": {"m.a", "m.d"}, "m.d": set()}
    assert cycles(graph) == [["m.a", "m.b", "m.c", "m.a"]]
