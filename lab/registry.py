"""The method registry: `@method(...)` names a decoding method, its family, its claims and its paper.

A method is a generator `fn(dec, *, option=default, ...)` that yields one `Step` per commit; `dec` is
the `Decoding` it runs in (lab.decoding). `python -m lab methods --json` prints this registry.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from typing import Callable

from .errors import LabError

FAMILIES = ("autoregressive", "speculative", "diffusion", "constrained", "search")
METHOD_PACKAGES = ("lab.search", "lab.spec.drafters", "lab.spec.shapes", "lab.dllm.policies",
                   "lab.constrained")


@dataclass(frozen=True)
class MethodInfo:
    name: str
    family: str
    lossless: bool
    training_free: bool
    paper: str
    fn: Callable
    summary: str

    @property
    def options(self) -> dict:
        """Keyword options with their defaults, from the function's signature."""
        params = list(inspect.signature(self.fn).parameters.values())[1:]
        return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}

    def to_dict(self) -> dict:
        return {"name": self.name, "family": self.family, "lossless": self.lossless,
                "training_free": self.training_free, "paper": self.paper, "summary": self.summary,
                "options": {k: v for k, v in self.options.items() if isinstance(v, (int, float, str, bool, type(None)))}}


METHODS: dict[str, MethodInfo] = {}


def method(name: str, *, family: str, lossless: bool, training_free: bool = True, paper: str):
    """Register a decoding method under `name`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}")

    def register(fn: Callable) -> Callable:
        if name in METHODS and METHODS[name].fn is not fn:
            raise ValueError(f"method {name!r} is registered twice")
        summary = (inspect.getdoc(fn) or "").strip().splitlines()[0] if fn.__doc__ else ""
        METHODS[name] = MethodInfo(name, family, lossless, training_free, paper, fn, summary)
        return fn

    return register


BATCHED: dict[str, Callable] = {}  # method name -> fn(batch: lab.batch.BatchDecoding, *, same options)


def batched(name: str):
    """Register the batched implementation of method `name` (lab.batch.generate_batch runs it)."""

    def register(fn: Callable) -> Callable:
        if name in BATCHED and BATCHED[name] is not fn:
            raise ValueError(f"batched method {name!r} is registered twice")
        BATCHED[name] = fn
        return fn

    return register


def load_all() -> dict[str, MethodInfo]:
    """Import every method module so that all methods are registered."""
    for package in METHOD_PACKAGES:
        try:
            mod = importlib.import_module(package)
        except ModuleNotFoundError as err:
            if err.name and package.startswith(err.name):
                continue
            raise
        for info in pkgutil.iter_modules(mod.__path__):
            importlib.import_module(f"{package}.{info.name}")
    return METHODS


def get(name: str) -> MethodInfo:
    methods = load_all()
    if name not in methods:
        raise LabError(f"unknown method {name!r}; known methods: {', '.join(sorted(methods))}")
    return methods[name]


def parse_options(info: MethodInfo, raw: dict) -> dict:
    """Check option names against the method's signature and convert strings to the defaults' types."""
    known = info.options
    out = {}
    for key, value in raw.items():
        if key not in known:
            hint = ", ".join(sorted(known)) or "none"
            raise LabError(f"method {info.name!r} has no option {key!r}; its options: {hint}")
        default = known[key]
        if isinstance(value, str) and default is not None and not isinstance(default, str):
            try:
                if isinstance(default, bool):
                    if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                        raise ValueError(value)
                    value = value.lower() in ("1", "true", "yes")
                else:
                    value = type(default)(value)
            except ValueError:
                raise LabError(f"option {key}={value!r} of {info.name!r} must be a {type(default).__name__}") from None
        out[key] = value
    return out
