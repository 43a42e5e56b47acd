"""One validator for the whole config, driven by the schema: rules sit next to the fields they constrain.

A structured-config dataclass says what each field accepts where the field is declared:

    n_trials: int = field(default=30, metadata=rules(Range(1, 100_000)))

`check_fields` walks a config object's dataclass tree and stops at the first field whose value has
the wrong type (OmegaConf misses some: the items of lists, for one) or breaks one of its rules,
naming the full dotted key, the value and what is allowed. A section added later is a dataclass
field of `AutopruneConfig`, so its fields are checked the same way with nothing to register.

Rules marked `probe` look at the machine (devices, files, stores, servers) and never change it;
the walk runs pure rules and probes in separate passes, so cheap mistakes are named first.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Sequence
from typing import Any, ClassVar

from autoprune.errors import ConfigError

RULES = "autoprune.rules"  # the dataclass field metadata key holding a field's rules


def rules(*checks: Rule) -> dict[str, tuple[Rule, ...]]:
    """Field metadata declaring the rules a field's value must satisfy (after its type)."""
    return {RULES: checks}


def show(value: Any, limit: int = 60) -> str:
    """A value as a message quotes it: repr (so one line), shortened."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def is_number(value: Any) -> bool:
    """A finite real number; booleans are not numbers here, though Python counts them as ints."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Rule:
    """One constraint on a field's value. `problem` returns None when the value is fine, else the
    whole one-line message: what is wrong with `key`, then how to fix it."""

    probe: ClassVar[bool] = False  # True: the rule looks at the machine (files, devices, network)

    def problem(self, key: str, value: Any) -> str | None:
        raise NotImplementedError

    def check(self, key: str, value: Any) -> None:
        """Raise `ConfigError` with the problem, if any."""
        message = self.problem(key, value)
        if message:
            raise ConfigError(message)


@dataclasses.dataclass(frozen=True)
class Range(Rule):
    """A number in [low, high]: whole numbers when both ends are ints (the field's type says so too)."""

    low: int | float
    high: int | float

    def problem(self, key: str, value: Any) -> str | None:
        if is_number(value) and self.low <= value <= self.high:
            return None
        whole = isinstance(self.low, int) and isinstance(self.high, int)
        return f"{key} is {show(value)}; use a {'whole ' if whole else ''}number from {self.low} to {self.high}"


@dataclasses.dataclass(frozen=True)
class OneOf(Rule):
    """One of a fixed set of names."""

    choices: tuple[str, ...]

    def problem(self, key: str, value: Any) -> str | None:
        if value in self.choices:
            return None
        return f"unknown {key} {show(value)}; choose one of {', '.join(self.choices)}"


@dataclasses.dataclass(frozen=True)
class OneOfNumbers(Rule):
    """One of a fixed set of numbers (the bit widths a quantizer packs, say)."""

    values: tuple[int | float, ...]
    meaning: str = ""  # said after the list, e.g. "16: not quantized"

    def problem(self, key: str, value: Any) -> str | None:
        if is_number(value) and value in self.values:
            return None
        note = f" ({self.meaning})" if self.meaning else ""
        return f"{key} is {show(value)}; use one of {', '.join(map(str, self.values))}{note}"


@dataclasses.dataclass(frozen=True)
class Text(Rule):
    """A non-empty string of at most `max_length` characters, matching `pattern` when given."""

    max_length: int = 1000
    pattern: str | None = None
    what: str = "a non-empty string"  # what the fix asks for

    def problem(self, key: str, value: Any) -> str | None:
        fits = isinstance(value, str) and 0 < len(value) <= self.max_length
        if fits and (self.pattern is None or re.fullmatch(self.pattern, value, re.ASCII)):
            return None
        return f"{key} is {show(value)}; use {self.what} (at most {self.max_length} characters)"


@dataclasses.dataclass(frozen=True)
class Each(Rule):
    """A rule for every item of a list; the message names the item as `key[index]`."""

    rule: Rule

    @property
    def probe(self) -> bool:  # type: ignore[override]
        return self.rule.probe

    def problem(self, key: str, value: Any) -> str | None:
        for index, item in enumerate(value):
            message = self.rule.problem(f"{key}[{index}]", item)
            if message:
                return message
        return None


@dataclasses.dataclass(frozen=True)
class Directions(Rule):
    """A non-empty list of directions: points of one length, coordinates in [0, 1], none all zero."""

    example: str = "[[1,0],[0.5,0.5],[0,1]]"

    def problem(self, key: str, value: Any) -> str | None:
        lengths = {len(point) if isinstance(point, (list, tuple)) else None for point in value}
        if value and len(lengths) == 1 and not lengths & {0, None}:
            for index, point in enumerate(value):
                if not all(is_number(x) and 0 <= x <= 1 for x in point) or not any(point):
                    return (
                        f"{key}[{index}] is {show(point)}; use numbers from 0 to 1, one per objective, "
                        "not all 0 (a direction)"
                    )
            return None
        return f"{key} is {show(value)}; use a list of points of one length each, such as {self.example}, or null"


NAME = Text(
    100, r"[A-Za-z0-9][A-Za-z0-9._-]*", "a name of letters, digits, '.', '_' and '-' that starts with a letter or digit"
)
SEED = Range(0, 2**32 - 1)


# --- types ------------------------------------------------------------------------------------


def _optional(hint: Any) -> tuple[Any, bool]:
    """(the type inside Optional, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), len(args) < len(typing.get_args(hint))
    return hint, False


def describe_type(hint: Any) -> str:
    """What a value of this type looks like, as the fix of a type error says it."""
    inner, nullable = _optional(hint)
    origin = typing.get_origin(inner)
    if origin in (list, tuple, Sequence):
        item = typing.get_args(inner)[0] if typing.get_args(inner) else Any
        phrase = f"a list of {_plural(item)} such as [{_example(item)},{_example(item)}]"
    elif dataclasses.is_dataclass(inner):
        phrase = f"a section with the keys {', '.join(f.name for f in dataclasses.fields(inner))}"
    else:
        phrase = {
            int: "a whole number",
            float: "a number",
            str: "a string",
            bool: "true or false",
            dict: "a mapping such as {key: value}",
        }.get(origin or inner, "any value")
    return f"{phrase} or null" if nullable else phrase


def _plural(hint: Any) -> str:
    return {int: "whole numbers", float: "numbers", str: "strings", bool: "booleans"}.get(hint, "values")


def _example(hint: Any) -> str:
    return {int: "1", float: "0.5", str: "a", bool: "true"}.get(hint, "x")


def type_problem(key: str, value: Any, hint: Any) -> str | None:
    """None when `value` has the type `hint` (items of lists checked one by one), else the message."""
    inner, nullable = _optional(hint)
    if value is None:
        return None if nullable or inner is Any else f"{key} is null; use {describe_type(hint)}"
    origin = typing.get_origin(inner)
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            return f"{key} is {show(value)}; use {describe_type(hint)}"
        item = typing.get_args(inner)[0] if typing.get_args(inner) else Any
        for index, entry in enumerate(value):
            message = type_problem(f"{key}[{index}]", entry, item)
            if message:
                return message
        return None
    if _has_type(value, origin or inner):
        return None
    return f"{key} is {show(value)}; use {describe_type(hint)}"


def _has_type(value: Any, kind: Any) -> bool:
    if kind is Any:
        return True
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) if isinstance(kind, type) else True


def hint_at(schema: type, key: str) -> Any:
    """The declared type of a dotted key such as `baselines.sparsities[1]` (None if the schema has no such key)."""
    hint: Any = schema
    for part in key.split("."):
        name, *indices = part.replace("]", "").split("[")
        inner, _ = _optional(hint)
        if not dataclasses.is_dataclass(inner):
            return None
        hints = typing.get_type_hints(inner)
        if name not in hints:
            return None
        hint = hints[name]
        for _ in indices:
            args = typing.get_args(_optional(hint)[0])
            hint = args[0] if args else Any
    return hint


# --- the walk ---------------------------------------------------------------------------------


def check_fields(config: Any, *, probes: bool = False, key: str = "") -> None:
    """Check every field of a structured config, depth first in declaration order.

    With `probes=False`: each field's type, then its pure rules. With `probes=True`: only the
    rules that look at the machine (run them once the pure checks have passed). Raises
    `ConfigError` for the first problem; None values of optional fields skip their rules.
    """
    hints = typing.get_type_hints(type(config))
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        where = f"{key}.{spec.name}" if key else spec.name
        if not probes:
            message = type_problem(where, value, hints[spec.name])
            if message:
                raise ConfigError(message)
        if dataclasses.is_dataclass(value):
            check_fields(value, probes=probes, key=where)
        if value is None:
            continue
        for rule in spec.metadata.get(RULES, ()):
            if rule.probe == probes:
                rule.check(where, value)
