"""A study's plan: the configuration checked against the installed plugins before any compute."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from omegaconf import DictConfig, OmegaConf

from autoprune.baselines import build_baselines
from autoprune.components import Compressor, Direction, Scorer
from autoprune.config import AutopruneConfig
from autoprune.data import check_source
from autoprune.errors import ConfigError
from autoprune.model import check_model_source
from autoprune.registry import Registry, build_registry
from autoprune.search import Baseline, check_search
from autoprune.space import SearchSpace

CALIBRATION_MODES = ("dense-once", "sequential")
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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

    @property
    def objectives(self) -> list[str]:
        return [name for scorer in self.scorers for name in scorer.objectives]

    @property
    def directions(self) -> list[Direction]:
        return [direction for scorer in self.scorers for direction in scorer.objectives.values()]


def prepare(resolved: DictConfig, registry: Registry | None = None) -> Plan:
    """Check every name and range in the config; raises ConfigError with the fix."""
    config: AutopruneConfig = OmegaConf.to_object(resolved)  # type: ignore[assignment]
    registry = registry or build_registry()
    if not config.scorers:
        raise ConfigError(f"no scorers are selected; set scorers=[...] ({registry.known_phrase('scorer')})")
    scorers = [registry.scorer(name) for name in config.scorers]
    space = SearchSpace.parse(config.space)
    compressors = [registry.compressor(name) for name in space.sections]
    for compressor in compressors:
        compressor.check(config.space[compressor.name], registry)
    check_search(config.search)
    check_model_source(config.model.path, config.model.hub_id, config.model.dtype)
    if config.calibration.mode not in CALIBRATION_MODES:
        raise ConfigError(
            f"unknown calibration.mode {config.calibration.mode!r}; choose one of {', '.join(CALIBRATION_MODES)}"
        )
    if config.calibration.batch_size < 1:
        raise ConfigError(f"calibration.batch_size is {config.calibration.batch_size}; it must be at least 1")
    if config.data.calib_windows < 1 or (config.data.eval_windows is not None and config.data.eval_windows < 1):
        raise ConfigError("data.calib_windows and data.eval_windows must be at least 1 (eval_windows=null uses all)")
    check_source(config.data.calibration, "calibration")
    check_source(config.data.evaluation, "evaluation")
    study_name = config.study.name or f"{config.model.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if not _STUDY_NAME.match(study_name):
        raise ConfigError(f"study.name {study_name!r} may hold only letters, digits, '.', '_' and '-'")
    for allocation in config.baselines.allocations:
        try:
            registry.allocation(allocation).check(config.space.get("prune", {}))
        except ConfigError as error:
            raise ConfigError(f"baselines.allocations: {error}") from None
    baselines = build_baselines(space, config.baselines)
    plan = Plan(config, resolved, registry, space, compressors, scorers, study_name, baselines)
    if len(set(plan.objectives)) != len(plan.objectives):
        raise ConfigError(f"the scorers {config.scorers} declare the same objective twice: {plan.objectives}")
    return plan


