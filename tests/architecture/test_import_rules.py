"""Who may import whom (docs/architecture.md), checked on the shipped code's import graph."""
from __future__ import annotations

import pytest

from tests.architecture.import_graph import Import, ImportGraph, load

# What the server may import of the nimbus package: the shared leaves, which need only the standard
# library and psutil.
SHARED_WITH_THE_SERVER = {
    "nimbus", "nimbus.error_codes", "nimbus.exceptions", "nimbus.home", "nimbus.naming", "nimbus.version", "nimbus.runtime", "nimbus.runtime.environment_build",
    "nimbus.runtime.job_spec", "nimbus.runtime.local_worker", "nimbus.runtime.private_files",
    "nimbus.runtime.run_isolation", "nimbus.runtime.run_states", "nimbus.runtime.sealed_token",
}
ADAPTERS = ("chalicelib.store", "chalicelib.compute", "chalicelib.hosting", "chalicelib.scoring",
            "chalicelib.local.local_compute")
DOMAIN_MAY_IMPORT = ("chalicelib.domain", "chalicelib.errors", "nimbus.error_codes", "nimbus")


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return load()


def _edges(graph: ImportGraph, source: tuple[str, ...] | str, target: tuple[str, ...] | str) -> list[str]:
    return sorted(f"{i.source} -> {i.target} (line {i.line})" for i in graph.imports
                  if _within(i.source, source) and _within(i.target, target))


def _within(module: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_graph_covers_the_whole_project(graph):
    assert {"app", "chalicelib.wiring", "chalicelib.domain.table_keys", "nimbus.runtime.runner",
            "nimbus.cli.main"} <= set(graph.modules)
    assert len(graph.imports) > 500


def test_the_import_graph_has_no_cycle(graph):
    assert graph.cycles() == []


def test_an_import_inside_a_function_says_why(graph):
    unexplained = sorted(f"{graph.modules[i.source].relative_to(graph.modules['app'].parent)}:{i.line} {i.target}"
                         for i in graph.imports if i.in_function and not i.commented)
    assert unexplained == []


def test_no_adapter_imports_a_service(graph):
    assert _edges(graph, ADAPTERS, "chalicelib.services") == []
    assert _edges(graph, ADAPTERS, ("chalicelib.api", "chalicelib.wiring")) == []


def test_services_import_neither_the_api_nor_the_composition_root(graph):
    assert _edges(graph, "chalicelib.services", ("chalicelib.api", "chalicelib.wiring", "chalicelib.local")) == []


def test_the_domain_is_a_leaf(graph):
    reached = [i for i in graph.imports if _within(i.source, "chalicelib.domain")]
    assert reached, "the domain package imports nothing at all?"
    assert [f"{i.source} -> {i.target}" for i in reached if not _within(i.target, DOMAIN_MAY_IMPORT)] == []


def test_the_client_imports_nothing_of_the_server_but_the_optional_local_platform(graph):
    crossing = [i for i in graph.imports if _within(i.source, "nimbus") and _within(i.target, ("chalicelib", "app"))]
    assert [(i.source, i.target) for i in crossing] == [("nimbus.cli.platform_cmds", "chalicelib.local.platform")]
    assert all(i.in_function and i.commented for i in crossing)


def test_the_server_imports_only_the_shared_leaves_of_the_client(graph):
    crossing = {i.target for i in graph.imports if _within(i.source, ("chalicelib", "app")) and _within(i.target, "nimbus")}
    assert crossing <= SHARED_WITH_THE_SERVER, crossing - SHARED_WITH_THE_SERVER


def test_the_shared_leaves_import_nothing_above_them(graph):
    above = [f"{i.source} -> {i.target}" for i in graph.imports
             if i.source in SHARED_WITH_THE_SERVER and _within(i.target, ("nimbus", "chalicelib"))
             and i.target not in SHARED_WITH_THE_SERVER]
    assert above == []


def test_a_new_cycle_is_caught():
    # Given a graph with a cycle of three modules and a module outside it
    graph = ImportGraph({name: None for name in ("a", "b", "c", "d")})  # type: ignore[arg-type]
    for source, target in (("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")):
        graph.imports.append(Import(source, target, 1, False, False))
    # Then the cycle, and only it, is found
    assert graph.cycles() == [["a", "b", "c"]]
