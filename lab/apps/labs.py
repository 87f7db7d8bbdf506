"""The Labs an app keeps: only the models the server was started with (unless any is allowed), and only a few."""
from __future__ import annotations

import threading
from collections import OrderedDict

from ..errors import LabError
from ..models import DEFAULT


def load_lab(name: str):
    from ..api import Lab

    return Lab(name)


class Labs:
    """Loaded Labs by model name. A name outside `allowed` is refused before anything loads (unless `allow_any`);
    beyond `size` Labs the least recently used is dropped (sessions running on it keep their fork)."""

    def __init__(self, allowed=(DEFAULT,), allow_any: bool = False, size: int = 2, load=load_lab):
        if size < 1:
            raise LabError(f"--max-models must be >= 1, got {size}")
        self.allowed = list(dict.fromkeys([DEFAULT, *allowed]))
        self.allow_any, self.size, self._load = allow_any, size, load
        self._labs: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def check(self, name: str) -> str:
        name = name.strip()
        if not (self.allow_any or name in self.allowed):
            raise LabError(f"model {name!r} is not served here: use {' or '.join(map(repr, self.allowed))}, "
                           "or start the server with --model NAME or --allow-any-model")
        return name

    def loaded(self) -> dict:
        """The Labs loaded now, by name (nothing loads)."""
        with self._lock:
            return dict(self._labs)

    def get(self, name: str):
        """The Lab of `name`, loaded on first use (one load at a time)."""
        name = self.check(name)
        with self._lock:
            if name not in self._labs:
                self._labs[name] = self._load(name)
            self._labs.move_to_end(name)
            while len(self._labs) > self.size:
                self._labs.popitem(last=False)
            return self._labs[name]
