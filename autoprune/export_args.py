"""The export command's arguments, checked before anything is opened or loaded: its own
(`trial=`, `pick=`, `pick.where=`, `out=`), and the Hydra overrides it accepts, those of the keys
that say where the study is and how to rebuild it (`study.*`, `mlflow.*`, `calibration.*`,
`model.path`, `model.device`, `progress`); the rest of the config is the study's own.

`out` must lie inside the current directory once symlinks are followed (`..` and links that leave
it are refused, and so is a link as `out` itself), not be that directory, and be absent or empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from autoprune.config import compose_config
from autoprune.errors import ConfigError
from autoprune.probes import directory_problem
from autoprune.validation import check_fields

EXPORT_ARGS = ("trial", "pick", "pick.where", "out")
OVERRIDABLE = ("study", "mlflow", "calibration", "model.path", "model.device", "progress")


@dataclass(frozen=True)
class ExportRequest:
    """The command's own arguments, and the Hydra overrides it was given."""

    out: str
    trial: int | None
    pick: str | None
    where: str | None
    overrides: list[str]


def parse_request(args: list[str]) -> ExportRequest:
    """Split the export's own arguments from the overrides; refuse missing, repeated or clashing ones."""
    own: dict[str, str] = {}
    overrides = []
    for arg in args:
        if arg.startswith("-"):
            raise ConfigError(f"unknown option {arg!r}; export takes trial=, pick=, pick.where=, out= and KEY=VALUE")
        key, _, value = arg.partition("=")
        if key not in EXPORT_ARGS:
            overrides.append(arg)
        elif key in own:
            raise ConfigError(f"{key}= is given twice ({own[key]!r} and {value!r}); give it once")
        else:
            own[key] = value
    if not own.get("out"):
        raise ConfigError("export needs out=DIR: a new or empty directory inside the current one")
    if "trial" in own and "pick" in own:
        raise ConfigError(f"trial={own['trial']} and pick={own['pick']} both choose the trial; give one of them")
    if "trial" not in own and "pick" not in own:
        raise ConfigError("export needs trial=N or pick=knee|best:<objective> to choose the trial")
    if "pick.where" in own and "pick" not in own:
        raise ConfigError("pick.where bounds what pick= chooses from; add pick=knee or pick=best:<objective>")
    trial = own.get("trial")
    if trial is not None and not (trial.isascii() and trial.isdigit()):
        raise ConfigError(f"trial={trial} is not a trial number; use trial=N, a whole number from 0")
    return ExportRequest(own["out"], int(trial) if trial else None, own.get("pick"), own.get("pick.where"), overrides)


def export_directory(out: str, root: Path) -> Path:
    """Where `out` lies once symlinks are followed: inside `root`, not `root` itself, and absent or empty."""
    root = root.resolve()
    target = Path(root, out)
    try:
        resolved = target.resolve()
    except (OSError, ValueError) as error:
        raise ConfigError(f"out={out} is not a usable path ({error}); name a directory inside {root}") from None
    if target.is_symlink():
        raise ConfigError(f"out={out} is a symbolic link; name a real directory inside {root}")
    if resolved == root or not resolved.is_relative_to(root):
        raise ConfigError(
            f"out={out} is {resolved}, not a directory inside the current directory {root}; "
            "give a path inside it (no .. and no links that leave it)"
        )
    if resolved.exists() and (not resolved.is_dir() or any(resolved.iterdir())):
        raise ConfigError(f"out={out} exists and is not an empty directory; give a new directory or empty it")
    problem = directory_problem(resolved, creatable=True)
    if problem:
        raise ConfigError(f"out={out} cannot be written: {problem}")
    return resolved


def overridden_keys(overrides: list[str]) -> list[str]:
    """The keys the overrides set, refused unless they are among those export may change."""
    keys = [parsed.key_or_group for parsed in OverridesParser.create().parse_overrides(overrides)]
    for key in keys:
        if not any(key == allowed or key.startswith(f"{allowed}.") for allowed in OVERRIDABLE):
            raise ConfigError(
                f"export rebuilds the trial with the study's own config, so {key} cannot be changed; "
                f"export takes overrides of {', '.join(OVERRIDABLE)}"
            )
    return keys


def given_overrides(overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """The overrides composed over the defaults (checked like a study's, stores probed), and their keys."""
    composed = compose_config(overrides)
    keys = overridden_keys(overrides)
    check_fields(OmegaConf.to_object(composed), probes=True)
    if composed.study.name is None:
        raise ConfigError("export needs study.name=NAME, the study the trial belongs to")
    return composed, keys
