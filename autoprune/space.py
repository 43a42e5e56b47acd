"""The search space as data: parsed from the config, sampled by any backend, never plugin code.

The config's `space` maps each compressor name to a section of parameters. A parameter is
either a constant (`allocation: searched`) or a distribution:

    {choices: [magnitude, wanda]}           categorical
    {low: 0.2, high: 0.8}                   float (add `log: true`, `step: 0.05`)
    {low: 1, high: 4, type: int}            integer
    {..., per_layer: true}                  one independent parameter per layer (per allocation
                                            unit for prune: block or linear sublayer)
    {..., when: {metric: [meta]}}           only sampled when an earlier parameter of the
                                            same section has one of the listed values

Flat parameter names are `<compressor>.<param>` and `<compressor>.<param>.<layer>`; a sample is
handed back nested, per compressor, with per-layer families as lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from autoprune.errors import ConfigError
from autoprune.validation import is_number, show

_DISTRIBUTION_KEYS = {"choices", "low", "high", "type", "log", "step", "per_layer", "when"}


def possible_values(spec: Any) -> list[Any]:
    """What a raw space entry can take, for validation: a constant, each of its `choices`, or
    both ends of its `low`/`high` range."""
    if isinstance(spec, Mapping):
        if "choices" in spec:
            return list(spec["choices"])
        return [spec.get("low"), spec.get("high")]
    return [spec]


class Suggester(Protocol):
    """The part of a backend's trial object the space needs (optuna.Trial satisfies it)."""

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...


@dataclass(frozen=True)
class Parameter:
    """One declared entry of a compressor's section."""

    compressor: str
    name: str
    kind: str  # "constant" | "categorical" | "float" | "int"
    value: Any = None  # constant value
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    per_layer: bool = False
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (earlier parameter, allowed values)

    @property
    def key(self) -> str:
        return f"{self.compressor}.{self.name}"

    def applies(self, sampled: dict[str, Any]) -> bool:
        return all(sampled.get(name) in allowed for name, allowed in self.when)

    def describe(self) -> str:
        if self.kind == "constant":
            return repr(self.value)
        family = " per layer" if self.per_layer else ""
        condition = "".join(f" when {name} in {list(allowed)}" for name, allowed in self.when)
        if self.kind == "categorical":
            return f"one of {list(self.choices)}{family}{condition}"
        scale = ", log" if self.log else ""
        step = f", step {self.step}" if self.step else ""
        return f"{self.kind} in [{self.low}, {self.high}]{scale}{step}{family}{condition}"

    def sample(self, trial: Suggester, key: str) -> Any:
        if self.kind == "constant":
            return self.value
        if self.kind == "categorical":
            return trial.suggest_categorical(key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(key, float(self.low), float(self.high), step=self.step, log=self.log)


def _is_choice(value: Any) -> bool:
    """What a categorical choice (or a `when` value) may be: a string, a finite number, a boolean
    or null, as Optuna stores them; never a list or a mapping."""
    return value is None or isinstance(value, (str, bool)) or is_number(value)


def _parse_when(where: str, spec: Any, earlier: set[str]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(
            f"{where}.when is {show(spec)}; it must map earlier parameters to values, e.g. {{metric: [meta]}}"
        )
    conditions = []
    for name, allowed in spec.items():
        if name not in earlier:
            raise ConfigError(f"{where}.when names {name!r}, which is not a parameter declared before it")
        values = tuple(allowed) if isinstance(allowed, (list, tuple)) else (allowed,)
        if not values or not all(_is_choice(value) for value in values):
            raise ConfigError(
                f"{where}.when.{name} is {show(allowed)}; list the values of {name} it applies to, e.g. [meta]"
            )
        conditions.append((name, values))
    return tuple(conditions)


def _parse_parameter(compressor: str, name: str, spec: Any, earlier: set[str]) -> Parameter:
    where = f"space.{compressor}.{name}"
    if not isinstance(spec, Mapping):
        return Parameter(compressor, name, "constant", value=spec)
    unknown = set(map(str, spec)) - _DISTRIBUTION_KEYS
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(_DISTRIBUTION_KEYS)}")
    for flag in ("per_layer", "log"):
        if not isinstance(spec.get(flag, False), bool):
            raise ConfigError(f"{where}.{flag} is {show(spec[flag])}; use true or false")
    per_layer = spec.get("per_layer", False)
    when = _parse_when(where, spec["when"], earlier) if "when" in spec else ()
    if "choices" in spec:
        return _categorical(compressor, name, spec, per_layer, when)
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where} needs either `choices` or both `low` and `high`")
    kind = spec.get("type", "float")
    if kind not in ("float", "int"):
        raise ConfigError(f"{where}.type is {show(kind)}; use float or int")
    whole = kind == "int"
    for key in ("low", "high", "step"):
        value = spec.get(key)
        if key == "step" and value is None:
            continue
        if not is_number(value) or (whole and not float(value).is_integer()) or (key == "step" and value <= 0):
            wanted = "a whole number" if whole else "a finite number"
            raise ConfigError(f"{where}.{key} is {show(value)}; use {wanted}{' above 0' if key == 'step' else ''}")
    low, high, step = spec["low"], spec["high"], spec.get("step")
    if not low <= high:
        raise ConfigError(f"{where} has low {low} above high {high}")
    if spec.get("log") and low <= 0:
        raise ConfigError(f"{where} has log: true with low {low}; a log scale needs low > 0")
    if spec.get("log") and step not in (None, 1):
        raise ConfigError(f"{where} has both log and step; use one of them")
    if whole:
        low, high, step = int(low), int(high), None if step is None else int(step)
    return Parameter(
        compressor,
        name,
        kind,
        low=low,
        high=high,
        log=spec.get("log", False),
        step=step,
        per_layer=per_layer,
        when=when,
    )


def _categorical(compressor: str, name: str, spec: Mapping[str, Any], per_layer: bool, when: tuple) -> Parameter:
    where = f"space.{compressor}.{name}"
    mixed = sorted(set(spec) & {"low", "high", "type", "log", "step"})
    if mixed:
        raise ConfigError(f"{where} has both choices and {', '.join(mixed)}; use either choices or low/high")
    choices = spec["choices"]
    if not isinstance(choices, (list, tuple)):
        raise ConfigError(f"{where}.choices is {show(choices)}; use a list such as [a, b]")
    if not choices:
        raise ConfigError(f"{where}.choices is empty; list at least one choice")
    for choice in choices:
        if not _is_choice(choice):
            raise ConfigError(
                f"{where}.choices holds {show(choice)}; a choice is a string, a finite number, true/false or null"
            )
    return Parameter(compressor, name, "categorical", choices=tuple(choices), per_layer=per_layer, when=when)


@dataclass
class SearchSpace:
    """All parameters of all compressor sections, in declaration order."""

    sections: dict[str, list[Parameter]]

    @classmethod
    def parse(cls, space: Mapping[str, Any]) -> SearchSpace:
        if not space:
            raise ConfigError("the search space is empty; pick one with space=<name> or declare space.<compressor>")
        sections: dict[str, list[Parameter]] = {}
        for compressor, section in space.items():
            if not isinstance(section, Mapping):
                raise ConfigError(
                    f"space.{compressor} is {show(section)}; it must be a mapping of parameters, e.g. {{metric: wanda}}"
                )
            parameters: list[Parameter] = []
            for name, spec in section.items():
                parameters.append(_parse_parameter(compressor, name, spec, {p.name for p in parameters}))
            sections[compressor] = parameters
        return cls(sections)

    def section(self, compressor: str) -> dict[str, Parameter]:
        return {parameter.name: parameter for parameter in self.sections[compressor]}

    def sample(
        self,
        trial: Suggester,
        layers: Mapping[str, int],
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Draw one value per parameter from the backend; per-layer families become lists.

        `layers` gives each compressor's per-layer family length. `overrides` fixes values
        without asking the backend (a baseline's allocation, say): parameters whose `when`
        no longer holds under them are then not sampled at all. With overrides, only the
        sections they name are sampled: a baseline runs its own compressor alone.
        """
        sample: dict[str, dict[str, Any]] = {}
        for compressor, parameters in self.sections.items():
            if overrides is not None and compressor not in overrides:
                continue
            fixed = (overrides or {}).get(compressor, {})
            values: dict[str, Any] = {}
            for parameter in parameters:
                if not parameter.applies(values):
                    continue
                if parameter.name in fixed:
                    values[parameter.name] = fixed[parameter.name]
                elif parameter.per_layer and parameter.kind != "constant":
                    values[parameter.name] = [
                        parameter.sample(trial, f"{parameter.key}.{layer}") for layer in range(layers[compressor])
                    ]
                else:
                    values[parameter.name] = parameter.sample(trial, parameter.key)
            sample[compressor] = {**fixed, **values}
        return sample

    def describe(self) -> dict[str, dict[str, str]]:
        """A readable summary, logged with the study."""
        return {
            compressor: {parameter.name: parameter.describe() for parameter in parameters}
            for compressor, parameters in self.sections.items()
        }
