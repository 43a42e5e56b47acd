"""The command line's overrides: parsed one by one, and Hydra's and OmegaConf's errors about them
turned into one line that names the key and says how to fix it.

Hydra's own messages span several lines (a caret under the bad character, the config search
path, a link); this keeps what the user needs: which override or key, what is wrong, and what
to write instead (`+key=value` for a key the composed config does not hold yet, the options of a
config group, the type the schema declares).
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    ValidationError,
)

from autoprune.errors import ConfigError
from autoprune.validation import describe_type, hint_at, show

PARSE_FIX = "write KEY=VALUE with an ASCII key, and quote a value holding spaces or special characters: key='a=b c'"
_LEXER = "LexerNoViableAltException: "


def check_syntax(overrides: Sequence[str], groups: Mapping[str, Sequence[str]]) -> None:
    """Parse each override on its own, so that a message names the one that is wrong; a config
    group (`groups`: its options by name) takes the name of one option, or a list of names."""
    parser = OverridesParser.create()
    for override in overrides:
        try:
            [parsed] = parser.parse_overrides([override])
        except OverrideParseException as error:
            raise ConfigError(
                f"cannot parse the override {show(override)}: {_parse_detail(override, error)}; {PARSE_FIX}"
            ) from None
        key = parsed.key_or_group
        if parsed.is_sweep_override():
            raise ConfigError(
                f"the override {show(override)} is a sweep (values separated by commas); a study takes one value: "
                "give one, or quote a value holding commas: key='a,b'"
            )
        if not key:
            raise ConfigError(f"the override {show(override)} names no key; write KEY=VALUE, e.g. search.n_trials=50")
        value = parsed.value()
        names = value if isinstance(value, list) else [value]
        if key in groups and not parsed.is_delete() and not all(isinstance(name, str) for name in names):
            raise ConfigError(
                f"{key}={show(value)} is not a config of the group {key}; choose one of {', '.join(groups[key])}"
            )


def _parse_detail(override: str, error: OverrideParseException) -> str:
    lines = str(error).splitlines()
    if lines[0].startswith(_LEXER) and len(lines) > 1 and "^" in lines[1]:
        position = lines[1].index("^") - len(_LEXER)
        if 0 <= position < len(override):
            return f"unexpected {override[position]!r} at character {position + 1}"
    if override.count("[") != override.count("]") or override.count("{") != override.count("}"):
        return "unbalanced brackets"
    return lines[0]


def compose_error(error: Exception, schema: type, overrides: Sequence[str]) -> str:
    """One line for an error raised while composing the config and merging it into `schema`."""
    if isinstance(error, MissingConfigException):
        return _missing_group_option(error)
    cause = error.__cause__
    if isinstance(error, ConfigCompositionException) and isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        return _absent_key(str(cause.full_key), schema, overrides)
    if isinstance(error, ConfigKeyError):  # `+key=value` for a key the schema does not have
        return _absent_key(str(error.full_key), schema, overrides)
    if isinstance(error, InterpolationResolutionError) and not isinstance(error, ValidationError):
        return (
            f"cannot resolve an interpolation: {_first_line(error)}; refer to an existing key such as "
            "${model.name}, or drop the ${...}"
        )
    if isinstance(error, ValidationError) and getattr(error, "full_key", None):
        key = str(error.full_key)
        hint = hint_at(schema, key)
        value = getattr(error, "value", None)
        shown = "null" if value is None else show(value)
        if hint is not None:
            return f"{key} is {shown}; use {describe_type(hint)}"
        return f"{key} is {shown}: {_first_line(error)}; fix the override that sets it"
    if isinstance(error, ConfigCompositionException):
        return _composition(error, cause)
    return f"invalid configuration: {_first_line(error)}; fix the overrides (autoprune --cfg prints the config)"


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _missing_group_option(error: MissingConfigException) -> str:
    """`model=nope`: Hydra lists the group's options on the lines after the problem."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    problem = lines[0].removeprefix("In 'config': ")
    marker = next((i for i, line in enumerate(lines) if line.startswith("Available options")), None)
    if marker is None:
        return f"{problem}; run autoprune --cfg to see the config groups"
    options = [line for line in lines[marker + 1 :] if not line.startswith(("Config search path", "provider="))]
    return f"{problem}; available options: {', '.join(options)}"


def _composition(error: ConfigCompositionException, cause: BaseException | None) -> str:
    message = str(error)
    group = re.match(r"Multiple values for (\S+?)\.", message)
    if group:
        return f"the config group {group[1]} is given more than once; give +{group[1]}=... (or {group[1]}=...) once"
    twice = re.match(r"(\S+) appears more than once in the final defaults list", message)
    if twice:
        return f"{twice[1]} is already in the defaults; write {twice[1]}=NAME (without +) to choose another"
    merging = re.match(r"Error merging override (.+?)=(.*)", message)
    if merging:
        key, value = merging[1].lstrip("+"), merging[2]
        return (
            f"cannot set {key} to {value} ({_first_line(cause) if cause else 'the types differ'}); "
            f"to replace the whole entry, delete it first: ~{key} '+{key}={value}'"
        )
    lines = [line.strip().rstrip(".") for line in message.splitlines() if line.strip()]
    if cause is not None:
        lines.insert(1, _first_line(cause))
    if len(lines) == 1:
        lines.append("fix the override (autoprune --cfg prints the config)")
    return "; ".join(lines)


def _absent_key(key: str, schema: type, overrides: Sequence[str]) -> str:
    """A key the composed config lacks: one the schema declares (or a free-form mapping such as
    `space.<compressor>` holds) needs Hydra's `+`; anything else is a typo, with the keys known there."""
    override = next((o.lstrip("+~") for o in overrides if o.lstrip("+~").split("=")[0] == key), None)
    if _declared(schema, key):
        written = f"+{override}" if override else f"+{key}=..."
        return f"{key} is not in the composed config; add it with {written}"
    parts = key.split(".")
    for depth in range(1, len(parts) + 1):
        prefix = ".".join(parts[:depth])
        if hint_at(schema, prefix) is None:
            known = _keys_at(schema, ".".join(parts[: depth - 1]))
            guess = difflib.get_close_matches(parts[depth - 1], known, n=1)
            near = f"did you mean {'.'.join([*parts[: depth - 1], guess[0]])}? " if guess else ""
            return f"unknown config key {prefix!r}; {near}known keys there: {', '.join(known)}"
    return f"unknown config key {key!r}; run autoprune --cfg to see every key"


def _declared(schema: type, key: str) -> bool:
    """Whether the schema declares the key, or the key lies inside a free-form mapping it declares."""
    parts = key.split(".")
    for depth in range(1, len(parts) + 1):
        hint = hint_at(schema, ".".join(parts[:depth]))
        if hint is None:
            return False
        if hint is Any or typing.get_origin(hint) is dict:
            return True
    return True


def _keys_at(schema: type, key: str) -> list[str]:
    hint = hint_at(schema, key) if key else schema
    return [spec.name for spec in fields(hint)] if is_dataclass(hint) else []
