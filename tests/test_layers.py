"""The package's imports point one way: no cycle between subpackages, no import up the layer order.

Every ``import`` of the package is read with ``ast`` (module-level and inside functions), mapped to
the unit it lands in (a subpackage or a top-level module) and checked against
:data:`ldensf_hpc.LAYERS`, which every unit must appear in.
"""
import ast
from pathlib import Path

import ldensf_hpc

PACKAGE = Path(ldensf_hpc.__file__).parent


def unit_of(module: str) -> str:
    """``ldensf_hpc.filters.ensf`` -> ``filters``; ``ldensf_hpc`` -> ``ldensf_hpc``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_name(path: Path) -> str:
    """``.../ldensf_hpc/filters/ensf.py`` -> ``ldensf_hpc.filters.ensf`` (a package: its name)."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """The package modules that ``source`` (of ``module``) imports anywhere, resolved to absolute names."""
    here = module.split(".") if is_package else module.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                out.update([target] if node.module else [f"{target}.{a.name}" for a in node.names])
            else:
                out.add(node.module)
    return {m for m in out if m.split(".")[0] == PACKAGE.name and m != PACKAGE.name}


def edges() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        module = module_name(path)
        src = unit_of(module)
        for target in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            dst = unit_of(target)
            if dst != src:
                graph.setdefault(src, set()).add(dst)
    return graph


def test_every_unit_has_a_layer():
    units = {unit_of(module_name(p)) for p in PACKAGE.rglob("*.py")} - {PACKAGE.name}
    assert units <= set(ldensf_hpc.LAYERS), sorted(units - set(ldensf_hpc.LAYERS))


def test_no_import_points_up_the_layers():
    rank = {u: i for i, u in enumerate(ldensf_hpc.LAYERS)}
    upward = sorted(f"{s} -> {d}" for s, ds in edges().items() for d in ds
                    if s in rank and d in rank and rank[d] > rank[s])
    assert not upward, upward


def test_no_cycle_between_subpackages():
    graph = edges()

    def reaches(start, goal, seen):
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(u for u in graph if reaches(u, u, {u}))
    assert not cycles, cycles


def test_the_checker_resolves_relative_and_function_local_imports():
    source = "import numpy\nfrom . import metrics\n\n\ndef f():\n    from ..filters.cycle import cycle\n    import ldensf_hpc.cli\n"
    assert imported_modules(source, "ldensf_hpc.data.generate") == {"ldensf_hpc.data.metrics", "ldensf_hpc.filters.cycle",
                                                                     "ldensf_hpc.cli"}
    assert imported_modules("from .cycle import cycle\n", "ldensf_hpc.filters", is_package=True) == {
        "ldensf_hpc.filters.cycle"}
