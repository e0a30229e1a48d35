"""The package's import graph, read from the source: no cycle between higgs_ds modules, no arrow from
`model/`, `inference/`, `data/` or `codec/` into `train/` (inference never imports training code), and
kernels/ importing nothing of ours but constants."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    if parts[0] == "kernels":  # kernels/ installs as higgs_ds.kernels
        parts = ("higgs_ds", *parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """higgs_ds module (kernels/ included) -> the higgs_ds modules it imports (at any depth of its code)."""
    files = [*(REPO / "higgs_ds").rglob("*.py"), *(REPO / "kernels").rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


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


def test_no_import_cycle_between_modules():
    graph = {m: {t for t in edges if not m.startswith(t + ".")}  # a module importing its own package's names
             for m, edges in import_graph().items()}
    assert "higgs_ds.model.loss" in graph["higgs_ds.model.modeling"]  # the graph is really read
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # and a cycle is really found
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_model_inference_data_and_codec_never_import_training_code():
    offenders = {m: sorted(t for t in e if t.startswith("higgs_ds.train"))
                 for m, e in import_graph().items()
                 if m.startswith(("higgs_ds.model", "higgs_ds.inference", "higgs_ds.data", "higgs_ds.codec",
                                  "higgs_ds.run_dir", "higgs_ds.audio_spec", "higgs_ds.report", "higgs_ds.prep"))}
    assert not {m: t for m, t in offenders.items() if t}


def test_the_model_knows_nothing_of_deepspeed():
    for path in (REPO / "higgs_ds" / "model").rglob("*.py"):
        assert "deepspeed" not in path.read_text(encoding="utf-8"), path


def test_the_run_report_reads_files_only():
    """higgs_ds.report renders a run directory: it imports no model, data or torch code of ours."""
    graph = import_graph()
    assert graph["higgs_ds.report"]  # the graph is really read
    outside = {m: sorted(t for t in e if not t.startswith(("higgs_ds.report", "higgs_ds.errors")))
               for m, e in graph.items() if m.startswith("higgs_ds.report")}
    assert not {m: t for m, t in outside.items() if t}


def test_kernels_import_nothing_of_ours_but_constants():
    """kernels/ is the bottom layer: `higgs_ds.ops` dispatches to it, never the other way round."""
    graph = import_graph()
    assert "higgs_ds.kernels.chunked_ce" in graph["higgs_ds.kernels.fused_head_ce"]  # kernels/ is really read
    outside = {m: sorted(t for t in e if not t.startswith(("higgs_ds.kernels", "higgs_ds.constants")))
               for m, e in graph.items() if m.startswith("higgs_ds.kernels")}
    assert not {m: t for m, t in outside.items() if t}


def test_comm_imports_nothing_of_ours():
    """higgs_ds.comm sits below train/ and inference/ (both run collectives): torch only."""
    graph = import_graph()
    assert "higgs_ds.comm" in graph["higgs_ds.train.checkpointing"]  # the graph is really read
    assert "higgs_ds.comm" in graph["higgs_ds.inference.generate"]
    assert graph["higgs_ds.comm"] == set()
