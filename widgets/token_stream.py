"""TokenStream: the generated text, each token coloured by origin (accepted draft, bonus, plain)."""
from __future__ import annotations

import ipywidgets as W

from lab.trace import Trace

from .figures import token_stream_html


class TokenStream(W.HTML):
    """An HTML widget showing a Trace's tokens; call `update(trace)` while a run streams."""

    def __init__(self, trace: Trace | None = None, title: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.title = title
        if trace is not None:
            self.update(trace)

    def update(self, trace: Trace) -> None:
        self.value = token_stream_html(trace, self.title)
