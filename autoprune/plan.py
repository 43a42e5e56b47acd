"""A study's plan: the configuration checked before any compute, against the schema's rules, the
installed plugins and the machine, without loading the model or creating any file.

The order: every field's type and value rules (`autoprune.validation`), then the names of
plugins and the search space (each compressor section's keys and values), then what needs more
than one field, and last the machine (devices, files, stores, servers) and the checkpoint's
config.json (context, serving context and memory).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from difflib import get_close_matches
from typing import Any

from omegaconf import DictConfig, OmegaConf

from autoprune.backends import load_backend
from autoprune.baselines import build_baselines
from autoprune.bounds import Bound
from autoprune.components import Compressor, Direction, Scorer
from autoprune.config import AutopruneConfig, ServingConfig
from autoprune.constraints import parse_constraints
from autoprune.data import check_source
from autoprune.errors import ConfigError
from autoprune.model import check_context, check_model_source, checkpoint_config, checkpoint_positions
from autoprune.registry import Registry, build_registry
from autoprune.samplers import check_search
from autoprune.search import Baseline
from autoprune.space import SearchSpace
from autoprune.storage import SQLITE, storage_file
from autoprune.validation import NAME, check_fields


@dataclass
class Plan:
    """A study's configuration, checked against the installed plugins before any compute."""

    config: AutopruneConfig
    resolved: DictConfig
    registry: Registry
    space: SearchSpace
    compressors: list[Compressor]
    scorers: list[Scorer]
    study_name: str
    baselines: list[Baseline] = field(default_factory=list)
    constraints: tuple[Bound, ...] = ()

    @property
    def objectives(self) -> list[str]:
        return [name for scorer in self.scorers for name in scorer.objectives]

    @property
    def directions(self) -> list[Direction]:
        return [direction for scorer in self.scorers for direction in scorer.objectives.values()]


def prepare(resolved: DictConfig, registry: Registry | None = None, probe: bool = True) -> Plan:
    """Check every key, name and range in the config; raises ConfigError with the fix. Creates nothing.

    `probe=False` leaves out the stores, servers and devices: a worker of another backend rebuilding
    the plan its driver checked, which records nothing itself (they may not be reachable from it)."""
    config: AutopruneConfig = OmegaConf.to_object(resolved)  # type: ignore[assignment]
    check_fields(config)
    registry = registry or build_registry()
    if not config.scorers:
        raise ConfigError(f"no scorers are selected; set scorers=[...] ({registry.known_phrase('scorer')})")
    scorers = bind_scorers(config.scorers, config.scoring, registry)
    space = SearchSpace.parse(config.space)
    compressors = [registry.compressor(name) for name in space.sections]
    for compressor in compressors:
        check_section_keys(compressor, config.space[compressor.name], registry)
        compressor.check(config.space[compressor.name], registry)
    check_search(config.search, sum(len(scorer.objectives) for scorer in scorers))
    load_backend(config.search.backend).check(config, probe)
    check_model_source(config.model.path, config.model.hub_id)
    study_name = config.study.name or f"{config.model.name}-{datetime.now():%Y%m%d-%H%M%S}"
    NAME.check("study.name", study_name)
    for allocation in config.baselines.allocations:
        try:
            registry.allocation(allocation).check(config.space.get("prune", {}))
        except ConfigError as error:
            raise ConfigError(f"baselines.allocations: {error}") from None
    plan = Plan(config, resolved, registry, space, compressors, scorers, study_name)
    if len(set(plan.objectives)) != len(plan.objectives):
        raise ConfigError(f"the scorers {config.scorers} declare the same objective twice: {plan.objectives}")
    plan.constraints = parse_constraints(config.constraints, plan.objectives, [*config.scorers, *space.sections])
    if probe:
        check_fields(config, probes=True)
        check_stores_apart(config.study.storage, config.mlflow.tracking_uri)
    sequential = config.calibration.mode == "sequential"
    model = config.model
    settings = checkpoint_config(model.path, model.hub_id)
    context = check_context(settings, model.context, config.data.calib_windows, sequential)
    check_serving(config.serving, checkpoint_positions(settings))
    if settings:
        for compressor in compressors:
            compressor.check_model(config.space[compressor.name], settings)
    blocks = settings.get("num_hidden_layers") if settings else None
    plan.baselines = build_baselines(space, config.baselines, blocks if type(blocks) is int else None)
    check_source(config.data.calibration, "calibration", context)
    check_source(config.data.evaluation, "evaluation", context)
    return plan


def bind_scorers(names: list[str], scoring: Mapping[str, Any], registry: Registry) -> list[Scorer]:
    """The selected scorers, each bound to its `scoring.<name>` section once its keys and values are
    checked. A section of an installed scorer that is not selected is checked too (a default kept
    in a config file), a section of an unknown one is refused."""
    for name, section in scoring.items():
        if not isinstance(section, Mapping):
            raise ConfigError(f"scoring.{name} must be a mapping of settings, got {section!r}")
        try:
            scorer = registry.scorer(str(name))  # unknown: the line lists the installed scorers
            check_scoring_keys(scorer, section)
            scorer.check(section)
        except ConfigError as error:
            raise ConfigError(f"scoring.{name}: {error}") from None
    return [registry.scorer(name).bind(scoring.get(name) or {}) for name in names]


def check_scoring_keys(scorer: Scorer, section: Mapping[str, Any]) -> None:
    """Refuse a key of `scoring.<name>` the scorer does not declare in its `params`."""
    for key in section:
        if key not in scorer.params:
            guess = get_close_matches(str(key), sorted(scorer.params), n=1)
            near = f"did you mean {guess[0]}? " if guess else ""
            takes = ", ".join(sorted(scorer.params)) or "no settings"
            raise ConfigError(f"unknown key {key!r}; {near}the {scorer.name} scorer takes: {takes}")


def check_serving(serving: ServingConfig, positions: int | None) -> None:
    """The deployment's context cannot be longer than the model's (`positions`: None when unknown)."""
    length = serving.context_length
    if length is not None and positions is not None and length > positions:
        raise ConfigError(
            f"serving.context_length is {length}, but the model has {positions} positions; "
            f"use serving.context_length={positions} or less (null = {positions})"
        )


def check_stores_apart(storage: str, tracking_uri: str) -> None:
    """Optuna and MLflow each create their own tables: one SQLite file cannot hold both."""
    optuna_file = storage_file(storage)
    mlflow_file = storage_file(tracking_uri) if tracking_uri.startswith(SQLITE) else None
    if optuna_file is not None and mlflow_file is not None and optuna_file.resolve() == mlflow_file.resolve():
        raise ConfigError(
            f"study.storage and mlflow.tracking_uri are the same file {str(optuna_file)!r}; "
            "give each its own, e.g. study.storage=sqlite:///autoprune.db mlflow.tracking_uri=sqlite:///mlflow.db"
        )


def check_section_keys(compressor: Compressor, section: Mapping[str, Any], registry: Registry) -> None:
    """Refuse a key of `space.<compressor>` the compressor does not declare (a typo such as
    `patern` would otherwise be ignored silently), naming the keys it takes."""
    known = compressor.section_keys(registry)
    for key in section:
        if key not in known:
            guess = get_close_matches(str(key), sorted(known), n=1)
            near = f"did you mean space.{compressor.name}.{guess[0]}? " if guess else ""
            takes = ", ".join(sorted(known)) or "no keys"
            raise ConfigError(
                f"unknown key space.{compressor.name}.{key}; {near}the {compressor.name} compressor takes: {takes}"
            )
