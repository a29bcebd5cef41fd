"""The parts of Saigon depend on each other one way only (a CI check: `make test` runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from import_graph import describe, find_cycle, part_edges, top_level

REPO = Path(__file__).resolve().parent.parent
ROOTS = [REPO / "contract", REPO / "operator", REPO / "runtime"]
TOP = {"saigon_contract", "saigon_operator", "saigon_agent", "saigon_runtime"}


@pytest.fixture(scope="module")
def edges() -> dict:
    found = part_edges(ROOTS)
    assert {src.partition(".")[0] for src, _ in found} >= TOP - {"saigon_contract"}
    return found


def test_no_cycle_between_top_level_packages(edges: dict) -> None:
    top = top_level(edges)
    cycle = find_cycle(top)
    assert cycle is None, "import cycle between packages:\n" + describe(cycle, top)


def test_no_cycle_between_runtime_subpackages_and_modules(edges: dict) -> None:
    runtime = {key: edge for key, edge in edges.items() if all(p.startswith("saigon_runtime.") for p in key)}
    assert {"saigon_runtime.engine", "saigon_runtime.adapters"} <= {p for key in runtime for p in key}
    cycle = find_cycle(runtime)
    assert cycle is None, "import cycle inside saigon_runtime:\n" + describe(cycle, runtime)


def test_the_contract_imports_no_other_part(edges: dict) -> None:
    out = [str(edge) for (src, dst), edge in top_level(edges).items() if src == "saigon_contract"]
    assert out == [], "\n".join(out)


@pytest.mark.parametrize(("a", "b"), [("saigon_operator", "saigon_agent"), ("saigon_agent", "saigon_operator")])
def test_operator_and_agent_never_import_each_other(edges: dict, a: str, b: str) -> None:
    edge = top_level(edges).get((a, b))
    assert edge is None, str(edge)


def test_the_runtime_never_imports_the_operator_side(edges: dict) -> None:
    out = [
        str(edge)
        for (src, dst), edge in top_level(edges).items()
        if src == "saigon_runtime" and dst in {"saigon_operator", "saigon_agent"}
    ]
    assert out == [], "\n".join(out)


def test_the_check_reports_a_cycle_with_its_import_chain(tmp_path: Path) -> None:
    pkg = tmp_path / "saigon_runtime"
    for sub in ("engine", "adapters"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "engine" / "engine.py").write_text("import torch\nfrom saigon_runtime.adapters.manager import M\n")
    (pkg / "adapters" / "manager.py").write_text("def f():\n    from ..engine import engine\n")
    found = part_edges([tmp_path])
    cycle = find_cycle(found)
    assert cycle == ["saigon_runtime.adapters", "saigon_runtime.engine", "saigon_runtime.adapters"]
    report = describe(cycle, found)
    assert "saigon_runtime.adapters.manager (line 2) imports saigon_runtime.engine.engine" in report
    assert "saigon_runtime.engine.engine (line 2) imports saigon_runtime.adapters.manager.M" in report
