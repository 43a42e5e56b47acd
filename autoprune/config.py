"""Structured configuration: the schema Hydra's composed YAML is merged into and checked against.

Every field declares what it accepts next to its default (`metadata=rules(...)`, see
`autoprune.validation`): the one validator walks these dataclasses, so a section added here is
validated by declaring its fields, with nothing else to write. Types and the rules that need
nothing but the value are checked when the config is composed; the checks that need the
installed plugins or look at the machine run in `autoprune.plan.prepare`, still before any compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

import autoprune_conf
from autoprune.backends import KnownBackend
from autoprune.data import TextSource
from autoprune.errors import ConfigError
from autoprune.model import DTYPES, embedded_model_path
from autoprune.overrides import check_syntax, compose_error
from autoprune.probes import Device, StorageURL, TrackingURI, WritableDir
from autoprune.validation import NAME, SEED, Directions, Each, OneOf, OneOfNumbers, Range, Text, check_fields, rules

CONFIG_DIR = Path(autoprune_conf.__file__).parent
CALIBRATION_MODES = ("dense-once", "sequential")

# Upper bounds a run can reach on one machine, stated in the messages that refuse more.
MAX_TRIALS = 100_000
MAX_WINDOWS = 1_000_000
MAX_BATCH = 4096
MAX_CONTEXT = 1 << 20
KV_BITS = OneOfNumbers((2, 3, 4, 6, 8, 16), "16: not quantized")  # the kv_cache compressor's widths
RAY_ADDRESS = Text(
    300,
    r"auto|[A-Za-z0-9][A-Za-z0-9.-]*:[0-9]{1,5}",
    "auto or the HOST:PORT of a Ray cluster's head (not a ray:// client address)",
)
HUB_ID = Text(
    96,
    r"(?!.*(--|\.\.))[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?",
    "a Hugging Face model id such as facebook/opt-1.3b",
)


@dataclass
class ModelConfig:
    name: str = field(default="tiny", metadata=rules(NAME))
    path: str | None = field(default=None, metadata=rules(Text(4096)))  # local checkpoint directory; wins over hub_id
    hub_id: str | None = field(default=None, metadata=rules(HUB_ID))  # loaded with from_pretrained when path is null
    dtype: str = field(default="float32", metadata=rules(OneOf(tuple(DTYPES))))
    device: str = field(default="cpu", metadata=rules(Device()))
    # window length in tokens; null = the model's maximum
    context: int | None = field(default=None, metadata=rules(Range(1, MAX_CONTEXT)))
    # KIVI's KV-cache quantization defaults for this model (conf/space/joint.yaml reads them)
    kv_group_size: int = field(default=32, metadata=rules(Range(1, 4096)))  # tokens / channels per group
    kv_residual: int = field(default=128, metadata=rules(Range(0, MAX_CONTEXT)))  # newest tokens kept in 16 bit


@dataclass
class DataConfig:
    name: str = field(default="stdlib", metadata=rules(Text(100)))
    calibration: TextSource = field(default_factory=lambda: TextSource(split="calib"))
    evaluation: TextSource = field(default_factory=lambda: TextSource(split="eval"))
    calib_windows: int = field(default=128, metadata=rules(Range(1, MAX_WINDOWS)))
    eval_windows: int | None = field(default=None, metadata=rules(Range(1, MAX_WINDOWS)))  # null = all
    seed: int = field(default=0, metadata=rules(SEED))


@dataclass
class CalibrationConfig:
    # or "sequential": statistics from the already-pruned earlier blocks, every trial
    mode: str = field(default="dense-once", metadata=rules(OneOf(CALIBRATION_MODES)))
    cache: bool = True  # reuse statistics of the same model, windows and kinds from disk
    # null = $XDG_CACHE_HOME/autoprune/stats or ~/.cache/autoprune/stats
    cache_dir: str | None = field(default=None, metadata=rules(Text(4096), WritableDir()))
    batch_size: int = field(default=8, metadata=rules(Range(1, MAX_BATCH)))  # windows per forward pass


@dataclass
class SearchConfig:
    sampler: str = field(default="tpe", metadata=rules(Text(100)))  # names checked by autoprune.search
    n_trials: int = field(default=30, metadata=rules(Range(1, MAX_TRIALS)))  # completed trials the study should have
    seed: int = field(default=0, metadata=rules(SEED))
    # NSGA-II and NSGA-III: trials per generation; null = sized from n_trials (autoprune.samplers)
    population_size: int | None = field(default=None, metadata=rules(Range(2, 10_000)))
    # NSGA-III: the directions it keeps the population spread along, each point one number per
    # objective in [0, 1] in the normalised objective space; null = evenly spread points
    reference_points: list[Any] | None = field(default=None, metadata=rules(Directions()))
    # NSGA-III: divisions of each objective axis for the evenly spread points; null = as many
    # points as the population has trials
    reference_divisions: int | None = field(default=None, metadata=rules(Range(1, 1000)))
    # TPE: random trials before the model-based ones
    n_startup_trials: int = field(default=10, metadata=rules(Range(0, MAX_TRIALS)))
    # stop after this many failed trials in one run; null = n_trials
    max_failures: int | None = field(default=None, metadata=rules(Range(1, MAX_TRIALS)))
    # what runs the trials: local (this process, one at a time) or ray (Ray Tune workers, see `ray:`)
    backend: str = field(default="local", metadata=rules(KnownBackend()))
    # multi-fidelity: stop a trial that completed trials clearly dominate at a cheap stage (autoprune.fidelity)
    fidelity: bool = False


@dataclass
class BaselinesConfig:
    # [] = no baselines
    allocations: list[str] = field(default_factory=lambda: ["uniform", "owl"], metadata=rules(Each(Text(100))))
    # used when the sparsity is searched; at most 0.99, as every allocation unit keeps 1 % of its weights
    sparsities: list[float] = field(default_factory=lambda: [0.5, 0.7], metadata=rules(Each(Range(0.0, 0.99))))
    # when the space has a kv_cache section: the kv_cache compressor alone, every layer at each width
    kv_bits: list[int] = field(default_factory=lambda: [4, 2], metadata=rules(Each(KV_BITS)))


@dataclass
class ServingConfig:
    """The deployment the memory objectives are computed for: a KV cache of `context_length`
    tokens for each of `batch_size` sequences."""

    # null = the model's maximum context
    context_length: int | None = field(default=None, metadata=rules(Range(1, MAX_CONTEXT)))
    batch_size: int = field(default=1, metadata=rules(Range(1, MAX_BATCH)))


@dataclass
class RayResources:
    """What one trial reserves on a Ray node; its torch threads are its CPUs (at least one)."""

    cpu: float = field(default=1.0, metadata=rules(Range(0.1, 1024.0)))
    gpu: float = field(default=0.0, metadata=rules(Range(0.0, 64.0)))


@dataclass
class RayConfig:
    """Where `search.backend=ray` runs trials (see autoprune.backends.ray_tune)."""

    # null: start Ray on this machine for the study (and stop it after); auto: the cluster running
    # here; or the HOST:PORT of a cluster's head
    address: str | None = field(default=None, metadata=rules(RAY_ADDRESS))  # probed when search.backend=ray
    # CPUs of the Ray the study starts; null = this machine's
    num_cpus: int | None = field(default=None, metadata=rules(Range(1, 4096)))
    # null = as many as the resources allow
    max_concurrent_trials: int | None = field(default=None, metadata=rules(Range(1, MAX_TRIALS)))
    resources_per_trial: RayResources = field(default_factory=RayResources)


@dataclass
class StudySection:
    # null = a fresh name; reuse a name to resume or extend that study
    name: str | None = field(default=None, metadata=rules(NAME))
    storage: str = field(default="sqlite:///autoprune.db", metadata=rules(Text(4096), StorageURL()))
    # seconds; a trial whose process has been silent for 3 intervals is failed and run again
    heartbeat_interval: float = field(default=10.0, metadata=rules(Range(0.1, 3600.0)))


@dataclass
class MlflowConfig:
    tracking_uri: str = field(default="sqlite:///mlflow.db", metadata=rules(Text(4096), TrackingURI()))
    experiment: str = field(default="autoprune", metadata=rules(Text(250)))


@dataclass
class AutopruneConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    space: dict[str, Any] = field(default_factory=dict)  # checked by autoprune.space and each compressor
    scorers: list[str] = field(default_factory=lambda: ["perplexity", "size"], metadata=rules(Each(Text(100))))
    scoring: dict[str, Any] = field(default_factory=dict)  # scoring.<scorer>: its settings, checked by the scorer
    # bounds a front trial must respect, e.g. 'memory_mb <= 12' (autoprune.constraints)
    constraints: list[str] = field(default_factory=list, metadata=rules(Each(Text(200))))
    serving: ServingConfig = field(default_factory=ServingConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    study: StudySection = field(default_factory=StudySection)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    progress: bool = True  # progress bars on stderr for long steps (never when stderr is not a terminal)


if not OmegaConf.has_resolver("autoprune_asset"):
    OmegaConf.register_new_resolver("autoprune_asset", embedded_model_path)


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """Compose conf/config.yaml with Hydra overrides, merge it into the schema and check every
    field's type and value rules; raises `ConfigError` with one line naming the key and the fix."""
    groups = {group.name: sorted(option.stem for option in group.glob("*.yaml")) for group in CONFIG_DIR.iterdir()}
    check_syntax(overrides, {group: options for group, options in groups.items() if options})
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            composed = compose(config_name="config", overrides=list(overrides))
        merged = OmegaConf.merge(OmegaConf.structured(AutopruneConfig), composed)
        OmegaConf.resolve(merged)
        config = OmegaConf.to_object(merged)
    except Exception as error:  # Hydra and OmegaConf raise many types (even TypeError) for bad overrides
        raise ConfigError(compose_error(error, AutopruneConfig, overrides)) from None
    check_fields(config)
    return merged  # type: ignore[return-value]


def to_container(config: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
