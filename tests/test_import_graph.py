"""Dependencies point down (DESIGN.md): no import cycles among simllm's modules, counting imports made
inside functions too; no function-local simllm imports (which hide cycles); the library never imports
the CLI; cost never imports sim."""

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1] / "simllm"

# Function-local imports still in modules other branches own (a ratchet: counts may only go down;
# every other module has none). The cycle they hid between cost.moe_ep and topology is gone.
LOCAL_IMPORTS_LEFT = {
    "simllm/cli/calibrate.py": 9, "simllm/cli/comm.py": 3, "simllm/cli/model.py": 2,
    "simllm/cli/model_explain.py": 1, "simllm/cli/place.py": 12, "simllm/cli/report.py": 2,
    "simllm/cli/run.py": 3, "simllm/cli/sweep.py": 4, "simllm/cli/trace.py": 7, "simllm/cli/validate.py": 1,
    "simllm/cost/collectives.py": 1, "simllm/cost/comm_tables.py": 6, "simllm/cost/deepep.py": 4,
    "simllm/cost/fit.py": 4, "simllm/cost/kernel_models.py": 4, "simllm/cost/moe_layer.py": 3,
    "simllm/cost/step.py": 1, "simllm/parallel.py": 2, "simllm/placement/affinity.py": 1,
    "simllm/placement/ilp.py": 3, "simllm/placement/offload.py": 2, "simllm/sweep.py": 6,
}
# no cycle left (the last, placement.placement <-> placement.registry, went with replan moving to the registry)
CYCLES_LEFT: list = []


def _modules() -> dict:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(mods: dict):
    """(module, imported module, function-local?) for every simllm import, with the packages it runs."""
    for m, p in mods.items():
        tree = ast.parse(p.read_text(encoding="utf-8"))
        top = {id(n) for n in tree.body}
        pkg = p.name == "__init__.py"
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom):
                base = m.split(".") if pkg else m.split(".")[:-1]
                if node.level:
                    base = base[:len(base) - (node.level - 1)]
                    t = ".".join(base + ([node.module] if node.module else []))
                else:
                    t = node.module or ""
                names = [f"{t}.{a.name}" if f"{t}.{a.name}" in mods else t for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for t in names:
                parts = t.split(".")
                for i in range(2, len(parts) + 1):  # importing a.b.c runs a.b's __init__ too
                    u = ".".join(parts[:i])
                    if u in mods and u != m and not m.startswith(u + "."):
                        yield m, u, id(node) not in top and not _type_checking(tree, node)


def _type_checking(tree, node) -> bool:
    for n in tree.body:
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.dump(n.test) and node in list(ast.walk(n)):
            return True
    return False


def test_no_import_cycles_counting_function_local_imports():
    mods = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    g.add_edges_from((a, b) for a, b, _local in _imports(mods))
    sccs = [c for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert sorted(map(sorted, sccs)) == sorted(map(sorted, CYCLES_LEFT))


def test_no_new_function_local_simllm_imports():
    mods = _modules()
    count: dict = {}
    seen = set()
    for m, p in mods.items():
        tree = ast.parse(p.read_text(encoding="utf-8"))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and id(node) not in top and (node.level or
                                                                            (node.module or "").startswith("simllm")):
                if not _type_checking(tree, node) and id(node) not in seen:
                    seen.add(id(node))
                    f = str(p.relative_to(ROOT.parent))
                    count[f] = count.get(f, 0) + 1
    over = {f: n for f, n in count.items() if n > LOCAL_IMPORTS_LEFT.get(f, 0)}
    assert not over, f"function-local simllm imports (move them to the top; fix the cycle they hide): {over}"


def test_library_never_imports_the_cli_and_cost_never_imports_sim():
    mods = _modules()
    for m, t, _local in _imports(mods):
        if not m.startswith("simllm.cli") and m != "simllm.__main__":
            assert not t.startswith("simllm.cli"), (m, t)
        if m.startswith("simllm.cost"):
            assert not t.startswith("simllm.sim"), (m, t)
