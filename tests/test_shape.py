"""The shape of the code: no import cycles, the science packages apart from the web app,
every Celery task in one module under the names messages are sent by, services by domain."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("modelrunner", "evaluation", "webmushra", "config", "demo", "bench", "tests")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    # Imports inside functions count: they make cycles just the same, only later.
    return grimp.build_graph(*PACKAGES, include_external_packages=True, cache_dir=None)


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Tarjan's algorithm over the project's modules: every cycle shows as a component of two or more."""
    modules = sorted(m for m in graph.modules if m.split(".")[0] in PACKAGES)
    edges = {
        m: sorted(n for n in graph.find_modules_directly_imported_by(m) if n.split(".")[0] in PACKAGES) for m in modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(edges[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_no_import_cycles_anywhere(graph: grimp.ImportGraph) -> None:
    assert strongly_connected(graph) == []


def test_the_cycle_finder_finds_a_cycle(graph: grimp.ImportGraph) -> None:
    graph.add_import(importer="modelrunner.audio", imported="webmushra.models")
    graph.add_import(importer="webmushra.models", imported="modelrunner.audio")
    try:
        # The planted pair lies on one cycle (with whatever else links them already).
        assert any({"modelrunner.audio", "webmushra.models"} <= set(c) for c in strongly_connected(graph))
    finally:
        graph.remove_import(importer="modelrunner.audio", imported="webmushra.models")
        graph.remove_import(importer="webmushra.models", imported="modelrunner.audio")


@pytest.mark.parametrize("package", ["modelrunner", "evaluation"])
def test_science_packages_reach_nothing_of_the_web_app(graph: grimp.ImportGraph, package: str) -> None:
    for forbidden in ("webmushra", "config", "django", "rest_framework", "celery", "kombu"):
        chain = graph.find_shortest_chain(importer=package, imported=forbidden, as_packages=True)
        assert chain is None, f"{package} reaches {forbidden}: {' -> '.join(chain or ())}"


def test_views_and_api_call_services_never_each_other(graph: grimp.ImportGraph) -> None:
    views = sorted(graph.find_descendants("webmushra.views"))
    for view in views:
        others = {m for m in graph.find_modules_directly_imported_by(view) if m.startswith("webmushra.views.")}
        assert others == set(), f"{view} imports {sorted(others)}"
    api = graph.find_descendants("webmushra.api") | {"webmushra.api"}
    for module in api:
        assert not any(m.startswith("webmushra.views") for m in graph.find_modules_directly_imported_by(module))


def test_import_linter_contracts_hold() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_every_task_lives_in_the_web_app_under_the_names_messages_use() -> None:
    from django.conf import settings

    from config.celery import app
    from webmushra import messaging

    app.loader.import_default_modules()
    ours = {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}
    assert set(ours) == set(messaging.TASK_NAMES)
    assert {task.__module__ for task in ours.values()} == {"webmushra.tasks"}
    routed = set(settings.CELERY_TASK_ROUTES) | {e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values()}
    assert routed <= set(messaging.TASK_NAMES)


def test_a_message_for_an_unknown_task_is_refused() -> None:
    from webmushra import messaging

    with pytest.raises(ValueError, match="not a task of this project"):
        messaging.send_on_commit("modelrunner.tasks.render", [1])


def test_services_are_split_by_domain_and_stay_small() -> None:
    folder = REPO / "webmushra" / "services"
    modules = {p.stem: len(p.read_text().splitlines()) for p in folder.glob("*.py") if p.stem != "__init__"}
    assert {"experiments", "uploads", "rendering", "sessions", "reports"} <= set(modules)
    too_long = {name: n for name, n in modules.items() if n > 400}
    assert too_long == {}, f"split these further: {too_long}"
