"""The package's import graph, read from the source and held to docs/architecture.md: every row of its
package map is checked (each module may import only what its row lists), there is no cycle, model families
never import each other, scripts/ never import launch/, and nothing outside higgs_ds/models/ names a family."""

import ast
import re
from pathlib import Path

import pytest

from higgs_ds.models import get_family
from higgs_ds.models.registry import _BUILTIN

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO / "docs" / "architecture.md"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    if parts[0] == "kernels":  # kernels/ installs as higgs_ds.kernels
        parts = ("higgs_ds", *parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module name an import of `path` names (at any depth of its code), with `from a import b` as a.b."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def import_graph() -> dict[str, set[str]]:
    """higgs_ds module (kernels/ included) -> the higgs_ds modules it imports (at any depth of its code)."""
    files = [*(REPO / "higgs_ds").rglob("*.py"), *(REPO / "kernels").rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    return {name: {t for t in _imports(path) if t in modules and t != name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [])):
            return found
    return None


def package_map() -> dict[str, set[str] | None]:
    """docs/architecture.md's package map: module prefix -> the prefixes it may import (None: everything)."""
    table = ARCHITECTURE.read_text(encoding="utf-8").split("## Package map", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        prefixes = [_prefix(p) for p in re.findall(r"`([^`]+)`", cells[0])]
        allowed = None if cells[2].startswith("everything") else {_prefix(n) for n in re.findall(r"`([^`]+)`",
                                                                                                   cells[2])}
        rows.update({p: allowed for p in prefixes})
    return rows


def _prefix(name: str) -> str:
    """`higgs_ds/codec/`, `codec`, `kernels/` or `models.loss` as a module prefix."""
    name = name.strip("/").removesuffix(".py").replace("/", ".")
    if name.startswith("higgs_ds"):
        return name
    return "higgs_ds." + name


def _row(module: str, rows: dict) -> str | None:
    return max((p for p in rows if module == p or module.startswith(p + ".")), key=len, default=None)


def test_the_package_map_is_read_and_catches_a_forbidden_arrow():
    rows = package_map()
    assert rows["higgs_ds.report"] == {"higgs_ds.errors", "higgs_ds.output_guard"} and rows["higgs_ds.comm"] == set()
    assert rows["higgs_ds.kernels"] == {"higgs_ds.constants"} and "higgs_ds.models.higgs_v2" in rows
    assert _row("higgs_ds.models.higgs_tts3.model", rows) == "higgs_ds.models.higgs_tts3"
    assert _forbidden({"higgs_ds.report.page": {"higgs_ds.train.loop"}}, rows) == {
        "higgs_ds.report.page": ["higgs_ds.train.loop"]}


def _forbidden(graph, rows) -> dict[str, list[str]]:
    out = {}
    for module, edges in graph.items():
        row = _row(module, rows)
        allowed = rows.get(row)
        if allowed is None:  # `launch/` (everything), or the package root, which imports nothing
            continue
        bad = sorted(t for t in edges if t != "higgs_ds" and not _inside(t, row, rows)
                     and not any(t == a or t.startswith(a + ".") for a in allowed))
        if bad:
            out[module] = bad
    return out


def _inside(target: str, row: str, rows) -> bool:
    """`target` belongs to the package of `row` (its own row or one below it)."""
    own = _row(target, rows) or ""
    return own == row or own.startswith(row + ".")


def test_every_module_imports_only_what_its_row_of_the_package_map_allows():
    rows, graph = package_map(), import_graph()
    unmapped = sorted(m for m in graph if m != "higgs_ds" and _row(m, rows) is None)
    assert not unmapped, f"modules without a row in {ARCHITECTURE.name}'s package map: {unmapped}"
    assert not _forbidden(graph, rows)


def test_no_import_cycle_between_modules():
    graph = {m: {t for t in edges if not m.startswith(t + ".")}  # a module importing its own package's names
             for m, edges in import_graph().items()}
    assert "higgs_ds.models.loss" in graph["higgs_ds.models.higgs_v2.model"]  # the graph is really read
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # and a cycle is really found
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_families_never_import_each_other_and_shared_model_code_imports_none():
    families = {m for m in import_graph() if m.startswith("higgs_ds.models.") and m.count(".") == 2
                and (REPO / "higgs_ds" / "models" / m.rsplit(".", 1)[1]).is_dir()}
    assert {"higgs_ds.models.higgs_v2", "higgs_ds.models.higgs_tts3"} <= families
    for module, edges in import_graph().items():
        if not module.startswith("higgs_ds.models"):
            continue
        own = next((f for f in families if module == f or module.startswith(f + ".")), None)
        other = sorted(t for t in edges for f in families - {own} if t == f or t.startswith(f + "."))
        assert not other, f"{module} imports {other}"


def test_the_model_knows_nothing_of_deepspeed():
    for path in (REPO / "higgs_ds" / "models").rglob("*.py"):
        assert "deepspeed" not in path.read_text(encoding="utf-8"), path


def test_scripts_import_the_library_not_launch():
    for path in (REPO / "scripts").rglob("*.py"):
        assert not {n for n in _imports(path) if n == "launch" or n.startswith("launch.")}, path


# ---- nothing outside higgs_ds/models/ names a family ----------------------------------------------------
def family_words() -> list[str]:
    """What naming a family looks like: its key parts, its architecture, its model and config class names."""
    words = {"tts3", "higgs_v2", "dualffn"}
    for name in _BUILTIN:
        family = get_family(name)
        words |= {family.model_cls.__name__.lower(), family.config_cls.__name__.lower()}
    return sorted(words)


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    return {id(n.body[0].value) for n in nodes if n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant) and isinstance(n.body[0].value.value, str)}


def names_of_families(source: str, words: list[str]) -> list[str]:
    """Identifiers, imported names and string constants (not docstrings) that contain a family word."""
    tree = ast.parse(source)
    docstrings, found = _docstrings(tree), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            texts = [node.value]
        elif isinstance(node, ast.Name):
            texts = [node.id]
        elif isinstance(node, ast.Attribute):
            texts = [node.attr]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            texts = [node.name]
        elif isinstance(node, ast.arg):
            texts = [node.arg]
        elif isinstance(node, ast.alias):
            texts = [node.name, node.asname or ""]
        elif isinstance(node, ast.ImportFrom):
            texts = [node.module or ""]
        else:
            continue
        found += [f"line {node.lineno}: {t!r}" for t in texts if any(w in t.lower() for w in words)]
    return found


def test_the_family_name_check_is_real():
    words = family_words()
    assert "higgsaudiomodel" in words and "higgstts3config" in words
    source = ('"""A docstring may say Higgs TTS 3."""\nfrom higgs_ds.models.higgs_v2 import x\n'
              'if arch == "higgs_tts3":\n    DualFFNLayer = HiggsAudioConfig  # a comment may say tts3 too\n')
    assert len(names_of_families(source, words)) == 4  # the import, the string, both identifiers


@pytest.mark.parametrize("folder", ["higgs_ds", "launch", "scripts"])
def test_nothing_outside_the_models_package_names_a_family(folder):
    words = family_words()
    offenders = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        if (REPO / "higgs_ds" / "models") in path.parents:
            continue
        if found := names_of_families(path.read_text(encoding="utf-8"), words):
            offenders[str(path.relative_to(REPO))] = found
    assert not offenders
