"""The house as docs/architecture.md draws it, checked against the code: every module is named in
its rooms table, every path named there exists, no module is over 400 lines, and every import
(module-level or inside a function) points to the same room or a lower floor, never up, so the
import graph has no cycle between rooms."""

import ast
import re

import pytest

from tests.support import ROOT

DOC = ROOT / "docs" / "architecture.md"
MAX_LINES = 400
# From the ground up, as docs/architecture.md lists them. A room is a package (folder) or a
# single module; an import may go to its own room or to a room on a lower floor.
FLOORS = [
    ["cnn_ablation.storage", "cnn_ablation.settings", "cnn_ablation.log", "cnn_ablation.architecture"],
    ["cnn_ablation.config", "cnn_ablation.run_report"],
    ["cnn_ablation.networks", "cnn_ablation.data"],
    ["cnn_ablation.jobs"],
    ["cnn_ablation.training", "cnn_ablation.studies"],
    ["cnn_ablation.ui", "cnn_ablation.cli"],
    ["cnn_ablation.__main__", "app"],
]
FLOOR = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}


def source_files() -> list:
    """Every .py file of the product once: the top-level storage/ folder is the package
    cnn_ablation.storage (cnn_ablation/storage is a link to it), so it is walked as itself."""
    return [ROOT / "app.py",
            *sorted(p for p in (ROOT / "cnn_ablation").rglob("*.py")
                    if "storage" not in p.relative_to(ROOT / "cnn_ablation").parts[:1]),
            *sorted((ROOT / "storage").rglob("*.py"))]


def module_name(path) -> str:
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "storage":
        rel = "cnn_ablation" / rel
    return ".".join(rel.with_suffix("").parts).removesuffix(".__init__")


def modules() -> dict[str, ast.Module]:
    """Every module of the product (migrations' versions are Alembic's scripts, not rooms)."""
    out = {}
    for path in source_files():
        rel = path.relative_to(ROOT)
        if "migrations" in rel.parts:
            continue
        out[module_name(path)] = ast.parse(path.read_text(), str(rel))
    return out


def room(module: str) -> str | None:
    """The room a module name belongs to: the longest FLOORS entry it starts with."""
    best = None
    for candidate in FLOOR:
        if (module == candidate or module.startswith(candidate + ".")) and (
                best is None or len(candidate) > len(best)):
            best = candidate
    return best


def imports(tree: ast.Module, package: str) -> set[str]:
    """Every module of ours that `tree` imports, at any depth (lazy imports count too)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else package
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in found if m.split(".")[0] in ("cnn_ablation", "app")}


def test_every_module_has_a_room_and_no_module_is_over_400_lines():
    for name in modules():
        if name != "cnn_ablation":  # the package's face: one docstring line, no code
            assert room(name) is not None, f"{name} stands in no room of docs/architecture.md"
    long = {str(p.relative_to(ROOT)): n for p in source_files()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_import_runs_up_a_floor_or_across_rooms_of_one_floor():
    known = modules()
    wrong = []
    for name, tree in known.items():
        package = name if tree and name.count(".") == 0 else name.rsplit(".", 1)[0]
        mine = room(name)
        for target in imports(tree, package):
            theirs = room(target)
            if theirs is None or theirs == mine:
                continue
            if FLOOR[theirs] >= FLOOR[mine]:
                wrong.append(f"{name} (floor {FLOOR[mine] + 1}) imports {target} "
                             f"(floor {FLOOR[theirs] + 1})")
    assert wrong == []


def test_storage_imports_nothing_of_cnn_ablation_but_itself():
    for name, tree in modules().items():
        if name.startswith("cnn_ablation.storage"):
            assert not {m for m in imports(tree, name) if m.startswith("cnn_ablation")
                        and not m.startswith("cnn_ablation.storage")}, name


def test_storage_is_one_package_installed_inside_cnn_ablation():
    """The repository keeps its top-level storage/ folder; the code imports it only as
    cnn_ablation.storage (a link), so an installed copy never puts a package named `storage` in
    site-packages, and no module is loaded twice under two names."""
    link = ROOT / "cnn_ablation" / "storage"
    assert link.is_symlink() and link.resolve() == (ROOT / "storage").resolve()
    top_level = [f"{module_name(p)}: {node.module if isinstance(node, ast.ImportFrom) else a.name}"
                 for p in [*source_files(), *sorted((ROOT / "tests").rglob("*.py")),
                           *sorted((ROOT / "benchmarks").rglob("*.py"))]
                 for node in ast.walk(ast.parse(p.read_text()))
                 if isinstance(node, ast.Import | ast.ImportFrom)
                 for a in (node.names if isinstance(node, ast.Import) else [node])
                 if ((node.module or "") if isinstance(node, ast.ImportFrom) else a.name)
                 .split(".")[0] == "storage" and getattr(node, "level", 0) == 0]
    assert top_level == []


def test_the_rooms_table_names_every_module_and_only_modules_that_exist():
    text = DOC.read_text()
    named = set(re.findall(r"`((?:cnn_ablation|storage)/[\w/]+\.py)`", text))
    assert named, "docs/architecture.md names no module"
    missing = {p for p in named if not (ROOT / p).exists()}
    assert missing == set(), f"named in docs/architecture.md but not in the code: {missing}"
    for name in modules():
        if name.startswith("cnn_ablation"):
            path = name.replace(".", "/").replace("cnn_ablation/storage", "storage")
            path = f"{path}/__init__.py" if (ROOT / path).is_dir() else f"{path}.py"
            if path.endswith("__init__.py"):
                continue  # a package's face: its folder's row says it
            assert path in named, f"{path} is not in docs/architecture.md's module list"


@pytest.mark.parametrize("package", ["networks", "data", "training", "jobs", "studies", "ui", "cli"])
def test_every_package_says_its_one_job_and_what_it_may_import(package):
    doc = ast.get_docstring(ast.parse((ROOT / "cnn_ablation" / package / "__init__.py").read_text()))
    assert doc, f"cnn_ablation/{package}/__init__.py has no docstring"
    assert "May import" in doc
