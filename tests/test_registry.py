"""The registry says, for every method, where it departs from its paper (issue 11, section 4)."""
from __future__ import annotations

from lab import registry


def test_every_method_states_its_departures():
    methods = registry.load_all()
    missing = sorted(name for name, m in methods.items() if not m.departures.strip())
    assert not missing, f"methods without a departures entry: {missing} (write 'none' when there is none)"
    for m in methods.values():
        assert m.to_dict()["departures"] == m.departures
