"""The `autoprune` command: an optional first word, then Hydra overrides.

autoprune                                  run the default study
autoprune +search=nsga3 model=opt-1.3b     any Hydra overrides
autoprune plugins                          list installed plugins
autoprune --cfg [overrides]                print the composed config and exit
autoprune export study.name=NAME trial=N out=DIR   write a trial as a checkpoint (autoprune/export.py)
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from autoprune.errors import AutopruneError, ConfigError

USAGE = """usage: autoprune [plugins] [--cfg] [KEY=VALUE ...]
       autoprune export study.name=NAME (trial=N | pick=RULE [pick.where=BOUNDS]) out=DIR [KEY=VALUE ...]

Runs a compression study described by Hydra config overrides, e.g.
  autoprune                                  default study on the embedded model
  autoprune +search=nsga3 search.n_trials=60 NSGA-III sampler, 60 trials
  autoprune model=opt-1.3b model.path=DIR    any Hugging Face causal LM
  autoprune study.name=NAME                  resume or extend a study
  autoprune plugins                          list the installed plugins
  autoprune export study.name=NAME pick=knee out=DIR
                                             a trial as a Hugging Face checkpoint with its recipe;
                                             pick=best:perplexity pick.where='memory_mb<=12', trial=N,
                                             calibration.mode=dense-once to reproduce it exactly
  autoprune --cfg [KEY=VALUE ...]            print the composed config
Config groups: model=, data=, space=, +search=; see the README for every key."""


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("autoprune")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    import mlflow  # noqa: F401  (configures its loggers on import; quiet them afterwards)
    from transformers.utils import logging as transformers_logging

    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    transformers_logging.disable_progress_bar()


def list_plugins() -> str:
    """The installed components by kind, with the plugin module and distribution of each, then broken plugins."""
    from autoprune.registry import KINDS, build_registry

    registry = build_registry()
    lines = []
    if not registry.autoload:
        lines.append("plugin auto-loading is off (AUTOPRUNE_DISABLE_PLUGIN_AUTOLOAD is set)")
    every = [(name, entry) for kind in KINDS for name, entry in registry.entries[kind].items()]
    name_width = max((len(name) for name, _ in every), default=0)
    plugin_width = max((len(entry.plugin) for _, entry in every), default=0)
    for kind in KINDS:
        entries = registry.entries[kind]
        lines.append(f"{kind}s:")
        if not entries:
            lines.append("  (none)")
        for name in sorted(entries):
            entry = entries[name]
            lines.append(f"  {name:<{name_width}}  {entry.plugin:<{plugin_width}}  from {entry.distribution}")
    if registry.broken:
        lines.append("broken plugins:")
        broken_width = max(len(broken.name) for broken in registry.broken)
        distribution_width = max(len(broken.distribution) for broken in registry.broken)
        for broken in registry.broken:
            lines.append(
                f"  {broken.name:<{broken_width}}  from {broken.distribution:<{distribution_width}}  {broken.problem}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; a user's mistake ends as one line on stderr and exit code 2, before compute."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    try:
        if args and args[0] == "plugins":
            print(list_plugins())
            return 0
        if args and args[0] == "export":
            from autoprune.export import run_export

            _configure_logging()
            run_export(args[1:])
            return 0
        from omegaconf import OmegaConf

        from autoprune.config import compose_config

        options = [arg for arg in args if arg.startswith("-") and arg != "--cfg"]
        if options:
            raise ConfigError(
                f"unknown option {options[0]!r}; autoprune takes plugins, --cfg, --help and KEY=VALUE overrides"
            )
        show_config = "--cfg" in args
        config = compose_config([arg for arg in args if arg != "--cfg"])
        if show_config:
            print(OmegaConf.to_yaml(config))
            return 0
        _configure_logging()
        from autoprune.study import run_study

        run_study(config)
    except AutopruneError as error:
        print(f"autoprune: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
