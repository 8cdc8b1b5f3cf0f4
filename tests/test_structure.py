"""The code's structure, read from its source: the import floors, no import circles, and the
callbacks' narrow view of the training.

The floors, bottom up: ``pipelines`` imports nothing of ours; ``zoo`` imports ``pipelines``;
``tuning`` and ``benchmarks`` import ``zoo``. The one circle allowed is the registry's plug-in
pattern (``zoo.registry`` imports ``zoo.models``, whose modules register themselves with it).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipelines", "zoo", "tuning", "benchmarks")
FLOOR = {"pipelines": 0, "zoo": 1, "tuning": 2, "benchmarks": 2}
ALLOWED_CIRCLE = "zoo.registry"  # with zoo.models and its modules


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the four packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _dynamic_import(node: ast.AST) -> bool:
    """``importlib.import_module("name")`` or ``__import__("name")`` with a literal name (a
    relative or computed one is not followed)."""
    if not isinstance(node, ast.Call) or not node.args:
        return False
    func, first = node.func, node.args[0]
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("import_module", "__import__")
    )
    return (
        named
        and isinstance(first, ast.Constant)
        and isinstance(first.value, str)
        and not first.value.startswith(".")
    )


def imports(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports at run time (at any depth, including inside
    functions; not under ``if TYPE_CHECKING``). ``from package import name`` counts as an
    import of the submodule ``package.name`` when there is one, else of ``package``."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _type_checking(node)
        for inner in ast.walk(node)
    }
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif _dynamic_import(node):
            names = [node.args[0].value]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import zoo.training.loop` names the module
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports(path, name, modules) for name, path in modules.items()}


def upward(edges: dict[str, set[str]]) -> list[str]:
    """The imports of a floor above (or of the other package on the top floor)."""
    found = []
    for module, targets in edges.items():
        home = module.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if FLOOR[other] > FLOOR[home] or (other != home and FLOOR[other] == FLOOR[home]):
                found.append(f"{module} imports {target}")
    return found


def test_no_package_imports_a_floor_above_it():
    assert not upward(graph()), upward(graph())


def test_the_floor_check_sees_an_import_hidden_in_a_function(tmp_path):
    """The check above can fail: a pipelines module importing zoo inside a function, or through
    importlib, is an upward import; a plain pipelines import is not."""
    modules = module_files()
    fake = tmp_path / "fake.py"
    fake.write_text(
        "import importlib\n"
        "from pipelines import build\n"
        "def f():\n    import zoo.training\n"
        "def g():\n    return importlib.import_module('tuning.search')\n"
    )
    found = imports(fake, "pipelines.fake", modules)
    assert found == {"pipelines.build", "zoo.training", "tuning.search"}
    assert sorted(upward({"pipelines.fake": found})) == [
        "pipelines.fake imports tuning.search",
        "pipelines.fake imports zoo.training",
    ]


def circles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected parts of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                part.add(top)
                if top == node:
                    break
            if len(part) > 1:
                found.append(part)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_only_import_circle_is_the_registrys_plug_in_pattern():
    allowed = {ALLOWED_CIRCLE, "zoo.models"}
    bad = [
        sorted(part)
        for part in circles(graph())
        if not all(m in allowed or m.startswith("zoo.models.") for m in part)
    ]
    assert not bad, bad


def test_the_circle_finder_finds_a_circle():
    """The check above can fail: a made-up circle is found, a chain is not."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert circles({"a": {"b"}, "b": {"c"}}) == []


def _members(cls: ast.ClassDef) -> set[str]:
    names = set()
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
    return names


def _class(path: Path, name: str) -> ast.ClassDef:
    tree = ast.parse(path.read_text())
    return next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name)


def test_callbacks_use_only_their_view_of_the_training_and_the_trainer_provides_it():
    callbacks = ROOT / "zoo" / "training" / "callbacks.py"
    view = _members(_class(callbacks, "TrainingView"))
    used = set()
    for node in ast.walk(ast.parse(callbacks.read_text())):
        if not isinstance(node, ast.Attribute):
            continue
        target = node.value
        direct = isinstance(target, ast.Name) and target.id == "trainer"
        on_self = (
            isinstance(target, ast.Attribute)
            and target.attr == "trainer"
            and isinstance(target.value, ast.Name)
            and target.value.id == "self"
        )
        if direct or on_self:
            used.add(node.attr)
    assert used and used <= view, sorted(used - view)
    trainer = _class(ROOT / "zoo" / "training" / "loop.py", "Trainer")
    provided = _members(trainer) | {
        t.attr
        for n in ast.walk(trainer)
        if isinstance(n, (ast.Assign, ast.AnnAssign))
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        for t in ast.walk(t)
        if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
    }
    assert view <= provided, sorted(view - provided)
