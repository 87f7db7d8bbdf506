"""The arena's Diffusion tab: with no diffusion LM it says so in one line and names what the server loads; with
one it runs the chosen policies side by side on the arena's prompt, a canvas and a commitment map each."""
from __future__ import annotations

from lab.apps.arena import Arena
from lab.apps.diffusion import DiffusionTab, policies
from lab.apps.labs import Labs
from lab.dllm import models as dllm_models

from .helpers import text_dllm


def test_without_a_diffusion_lm_the_tab_says_so(monkeypatch, tmp_path):
    labs = Labs(load=lambda name: (_ for _ in ()).throw(AssertionError("nothing should load")))
    tab = DiffusionTab(Arena("default", labs))  # dllm-default ships, but this server did not load it
    assert tab.model.options == [] and tab.start_button.disabled
    assert "\n" not in tab.message and "this server was not started with one" in tab.message
    assert "This server loads default;" in tab.message and "--model dllm-default" in tab.message
    tab.start()
    assert not tab.busy and tab.traces == {}
    monkeypatch.setattr(dllm_models, "SHIPPED", tmp_path / "nothing-here")  # an install without it
    assert "dllm-default is not shipped yet" in DiffusionTab(Arena("default", labs)).message


def test_policies_run_side_by_side():
    labs = Labs(["tiny-dllm"], load=lambda name: text_dllm())
    labs.get("tiny-dllm")  # as `serve` loads its first model: a loaded diffusion LM is offered
    arena = Arena("default", labs)
    tab = DiffusionTab(arena)
    assert tab.model.options == ["tiny-dllm"] and "deer" not in tab.policies.options
    assert set(policies()) >= {"llada", "fast-dllm", "freedave", "ssd-dllm", "wedlm", "lopa", "apd"}  # apd: on the dLLM
    arena.prompt.value, arena.max_tokens.value = "Name three colours.", 12
    tab.policies.value = ["llada", "freedave", "fast-dllm", "wedlm"]
    tab.extra.value = "fast-dllm:threshold=0.01, llada:steps=3"  # more settings of a policy, side by side
    chosen = ["llada", "freedave", "fast-dllm", "wedlm", "fast-dllm threshold=0.01", "llada steps=3"]
    assert [label for label, _, _ in tab.runs()] == chosen
    tab._work(tab.runs(), dict(arena.settings(), model="tiny-dllm"))
    tab.refresh()
    assert tab.message == "Done: 6 runs." and not tab.errors
    assert list(tab.traces) == chosen and len(tab.panes.objects) == 6
    assert tab.traces["llada steps=3"].forwards == 3 and tab.traces["fast-dllm threshold=0.01"].options == {
        "threshold": 0.01}
    for column, (name, trace) in zip(tab.panes.objects, tab.traces.items()):
        head, canvas, figure = column.objects
        assert trace.new_tokens == 12 and f"<b>{name}</b>: 12 tokens, {trace.forwards} forwards" in head.object
        assert "12 of 12 positions committed" in canvas.object
        assert len(figure.object.data[0].z) == len(trace.steps)  # one row per step of the commitment map
    assert "<b>fast-dllm threshold=0.01</b>" in tab.panes.objects[4].objects[0].object
    llada, freedave = tab.traces["llada"], tab.traces["freedave"]
    assert freedave.tokens == llada.tokens and freedave.forwards < llada.forwards == 12
    assert tab.view() is not None


def test_a_served_train_dllm_folder_is_offered_before_it_loads(tmp_path):
    import json

    from lab.dllm import models as dllm_models

    (tmp_path / "manifest.json").write_text(json.dumps({"kind": dllm_models.KIND}))
    labs = Labs([str(tmp_path)], load=lambda name: (_ for _ in ()).throw(AssertionError("nothing should load")))
    tab = DiffusionTab(Arena("default", labs))
    assert tab.model.options == [str(tmp_path)] and not tab.start_button.disabled


def test_bad_extra_settings_are_a_message():
    labs = Labs(["tiny-dllm"], load=lambda name: text_dllm())
    labs.get("tiny-dllm")
    tab = DiffusionTab(Arena("default", labs))
    for extra, message in (("nope:x=1", "unknown policy 'nope'"), ("deer", "unknown policy 'deer'"),
                           ("fast-dllm:speed=2", "has no option 'speed'"), ("llada:steps=many", "must be an integer")):
        tab.extra.value = extra
        tab.start()
        assert tab.message.startswith("Error: ") and message in tab.message and not tab.busy
