"""Structured configuration: the schema Hydra's composed YAML is merged into and checked against.

Types and unknown keys are checked here, when the config is composed, before anything loads;
the plugin-dependent checks (names, ranges) happen in `autoprune.plan.prepare`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import autoprune_conf
from autoprune.data import TextSource
from autoprune.errors import ConfigError
from autoprune.model import embedded_model_path

CONFIG_DIR = Path(autoprune_conf.__file__).parent


@dataclass
class ModelConfig:
    name: str = "tiny"
    path: str | None = None  # local checkpoint directory; wins over hub_id
    hub_id: str | None = None  # Hugging Face hub id, loaded with from_pretrained when path is null
    dtype: str = "float32"
    device: str = "cpu"
    context: int | None = None  # window length in tokens; null = the model's maximum


@dataclass
class DataConfig:
    name: str = "stdlib"
    calibration: TextSource = field(default_factory=lambda: TextSource(split="calib"))
    evaluation: TextSource = field(default_factory=lambda: TextSource(split="eval"))
    calib_windows: int = 128
    eval_windows: int | None = None  # null = all
    seed: int = 0


@dataclass
class CalibrationConfig:
    mode: str = "dense-once"  # or "sequential": statistics from the already-pruned earlier blocks, every trial
    cache: bool = True  # reuse statistics of the same model, windows and kinds from disk
    cache_dir: str | None = None  # null = $XDG_CACHE_HOME/autoprune/stats or ~/.cache/autoprune/stats
    batch_size: int = 8  # windows per forward pass


@dataclass
class SearchConfig:
    sampler: str = "tpe"
    n_trials: int = 30  # completed trials the study should have
    seed: int = 0
    population_size: int | None = None  # NSGA-III; null = sized from n_trials
    n_startup_trials: int = 10  # TPE: random trials before the model-based ones
    max_failures: int | None = None  # stop after this many failed trials in one run; null = n_trials


@dataclass
class BaselinesConfig:
    allocations: list[str] = field(default_factory=lambda: ["uniform", "owl"])  # [] = no baselines
    sparsities: list[float] = field(default_factory=lambda: [0.5, 0.7])  # used when the sparsity is searched


@dataclass
class StudySection:
    name: str | None = None  # null = a fresh name; reuse a name to resume or extend that study
    storage: str = "sqlite:///autoprune.db"


@dataclass
class MlflowConfig:
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "autoprune"


@dataclass
class AutopruneConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    space: dict[str, Any] = field(default_factory=dict)
    scorers: list[str] = field(default_factory=lambda: ["perplexity", "size"])
    search: SearchConfig = field(default_factory=SearchConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    study: StudySection = field(default_factory=StudySection)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


if not OmegaConf.has_resolver("autoprune_asset"):
    OmegaConf.register_new_resolver("autoprune_asset", embedded_model_path)


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml with Hydra overrides and check it against the schema."""
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            composed = compose(config_name="config", overrides=overrides)
        schema = OmegaConf.structured(AutopruneConfig)
        merged = OmegaConf.merge(schema, composed)
        OmegaConf.resolve(merged)
    except HydraException as error:
        raise ConfigError(_one_line_hydra_error(error)) from None
    except OmegaConfBaseException as error:
        raise ConfigError(f"invalid configuration: {str(error).splitlines()[0]}") from None
    return merged


def _one_line_hydra_error(error: HydraException) -> str:
    """Hydra's messages span many lines; keep the problem and the available options."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if "is not in struct" in str(error.__cause__):
        cause = str(error.__cause__)
        key = cause.split("full_key:")[1].split()[0] if "full_key:" in cause else cause.split("'")[1]
        return f"unknown config key {key!r}; run `autoprune --cfg` to see every key"
    marker = next((i for i, line in enumerate(lines) if line.startswith("Available options")), None)
    if marker is not None:
        options = [
            line for line in lines[marker + 1 :] if not line.startswith(("Config search path", "provider=", "In "))
        ]
        return f"{lines[0]}; available options: {', '.join(options)}"
    return lines[0] if lines else type(error).__name__


def to_container(config: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
