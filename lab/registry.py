"""The method registry: `@method(...)` names a decoding method, its family, its claims, its paper and where it
departs from that paper.

A method is a generator `fn(dec, *, option=default, ...)` that yields one `Step` per commit; `dec` is
the `Decoding` it runs in (lab.decoding). `python -m lab methods --json` prints this registry.
"""
from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from dataclasses import dataclass
from typing import Callable

from .errors import LabError

FAMILIES = ("autoregressive", "speculative", "diffusion", "constrained", "search")
METHOD_PACKAGES = ("lab.search", "lab.speculative.drafters", "lab.speculative.shapes", "lab.dllm.policies",
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
    departures: str = ""  # how the method departs from its paper ("none" when it does not)

    @property
    def options(self) -> dict:
        """Keyword options with their defaults, from the function's signature."""
        params = list(inspect.signature(self.fn).parameters.values())[1:]
        return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}

    def to_dict(self) -> dict:
        return {"name": self.name, "family": self.family, "lossless": self.lossless,
                "training_free": self.training_free, "paper": self.paper, "summary": self.summary,
                "departures": self.departures,
                "options": {k: v for k, v in self.options.items() if isinstance(v, (int, float, str, bool, type(None)))}}


METHODS: dict[str, MethodInfo] = {}


def method(name: str, *, family: str, lossless: bool, training_free: bool = True, paper: str, departures: str = ""):
    """Register a decoding method under `name`. `departures` says where it departs from its paper, in a sentence
    or two ("none" when it does not); the README's methods table and `methods --json` show it."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}")

    def register(fn: Callable) -> Callable:
        if name in METHODS and METHODS[name].fn is not fn:
            raise ValueError(f"method {name!r} is registered twice")
        summary = (inspect.getdoc(fn) or "").strip().splitlines()[0] if fn.__doc__ else ""
        METHODS[name] = MethodInfo(name, family, lossless, training_free, paper, fn, summary, departures.strip())
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
    """Check option names against the method's signature; convert strings (the CLI's) to the defaults' types and
    check the type of everything else (the API's), naming the option and what it accepts."""
    known = info.options
    out = {}
    for key, value in raw.items():
        if key not in known:
            hint = ", ".join(sorted(known)) or "none"
            raise LabError(f"method {info.name!r} has no option {key!r}; its options: {hint}")
        out[key] = convert(info.name, key, value, known[key])
    return out


KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def convert(method: str, key: str, value, default):
    """`value` as the type of `default` (a string is parsed; anything else must already have that type)."""
    kind = type(default)
    if default is None or kind not in KINDS:
        return value
    bad = LabError(f"option {key}={value!r} of {method!r} must be {KINDS[kind]}")
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool:
            if text not in ("1", "0", "true", "false", "yes", "no"):
                raise bad
            return text in ("1", "true", "yes")
        try:
            value = kind(text)
        except ValueError:
            raise bad from None
    if kind is bool and not isinstance(value, bool):
        raise bad
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise bad
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise LabError(f"option {key}={value!r} of {method!r} must be a finite number")
        value = float(value)
    if kind is str and not isinstance(value, str):
        raise bad
    if kind in (int, float) and value < 0:  # every count, length, budget and threshold of the lab is >= 0
        raise LabError(f"option {key}={value!r} of {method!r} must be >= 0")
    return value
