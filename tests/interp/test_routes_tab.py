"""The arena's Routes tab draws the route of the arena's prompt and of a run's first rejected draft, shows a
clicked edge's heads, and refuses what it cannot draw with a message."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from lab.apps.arena import Arena
from lab.apps.routes import PROMPT, RoutesTab


@pytest.fixture
def tab(default_lab):
    arena = Arena("default")
    arena.prompt.value, arena.chat.value = "The capital of France is", False
    return RoutesTab(arena)


def run(tab):
    tab._work(tab.settings())
    tab.refresh()


def test_the_route_of_the_prompt_and_a_clicked_edge(tab):
    run(tab)
    assert tab.message.startswith("Route of") and tab.route.object.layout.title.text.startswith("route to")
    assert "Paris" in str(tab.lens.object.data[0].text[-1])  # the lens's last layer at the last position
    markers = next(d for d in tab.route.object.data if d.name == "edges")
    tab._on_click(SimpleNamespace(new={"points": [{"customdata": int(markers.customdata[0])}]}))
    assert "edge L" in tab.details.object.layout.title.text
    assert tab.view() is not None


def test_a_rejected_draft_of_the_arena_run(tab, default_lab):
    tab.arena.traces = {"layer-skip": default_lab.generate("layer-skip", "List three colours.", chat=True,
                                                           max_new_tokens=12).trace}
    tab.refresh()
    assert tab.source.options == [PROMPT, "layer-skip: first rejected draft"]
    tab.source.value = "layer-skip: first rejected draft"
    run(tab)
    assert "rejected draft" in tab.route.object.layout.title.text


def test_what_cannot_be_drawn_is_a_message(tab):
    tab.position.value = 99
    run(tab)
    assert tab.message.startswith("Error: position 99") and not tab.busy
    tab.arena.prompt.value = "word " * 400
    tab.position.value = -1
    run(tab)
    assert "routes here take at most" in tab.message
