"""Discovers plugins and indexes the components they provide by kind and name."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from autoprune import hookspecs
from autoprune.components import Allocation, Compressor, PruningMetric, Scorer
from autoprune.errors import ConfigError

AUTOLOAD_OFF_VARIABLE = "AUTOPRUNE_DISABLE_PLUGIN_AUTOLOAD"
EXPLICIT_PLUGINS_VARIABLE = "AUTOPRUNE_PLUGINS"

# kind -> (hook name, component base class)
KINDS: dict[str, tuple[str, type]] = {
    "metric": ("register_metrics", PruningMetric),
    "allocation": ("register_allocations", Allocation),
    "compressor": ("register_compressors", Compressor),
    "scorer": ("register_scorers", Scorer),
}


@dataclass(frozen=True)
class Entry:
    """One registered component and where it came from."""

    kind: str
    name: str
    component: Any
    plugin: str
    distribution: str


@dataclass
class Registry:
    """All components of all loaded plugins, looked up by kind and name."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {kind: {} for kind in KINDS})
    autoload: bool = True

    def get(self, kind: str, name: str) -> Any:
        try:
            return self.entries[kind][name].component
        except KeyError:
            raise ConfigError(f"unknown {kind} {name!r}; {self.known_phrase(kind)}") from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def known_phrase(self, kind: str) -> str:
        names = self.names(kind)
        if names:
            return f"known {kind}s: {', '.join(names)}"
        hint = f" (plugin auto-loading is off: unset {AUTOLOAD_OFF_VARIABLE})" if not self.autoload else ""
        return f"no {kind}s are installed{hint}"

    def metric(self, name: str) -> PruningMetric:
        return self.get("metric", name)

    def allocation(self, name: str) -> Allocation:
        return self.get("allocation", name)

    def compressor(self, name: str) -> Compressor:
        return self.get("compressor", name)

    def scorer(self, name: str) -> Scorer:
        return self.get("scorer", name)


def _check_objectives(scorer: Scorer, plugin_name: str) -> None:
    if not scorer.objectives:
        raise ConfigError(f"scorer {scorer.name!r} of plugin {plugin_name} declares no objectives")
    for objective, direction in scorer.objectives.items():
        if direction not in ("minimize", "maximize"):
            raise ConfigError(
                f"scorer {scorer.name!r} of plugin {plugin_name} gives objective {objective!r} the direction "
                f"{direction!r}; use 'minimize' or 'maximize'"
            )


def plugin_manager(extra_plugins: tuple[ModuleType | object, ...] = ()) -> pluggy.PluginManager:
    """A plugin manager with every installed plugin loaded, unless auto-loading is turned off."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    if not os.environ.get(AUTOLOAD_OFF_VARIABLE):
        manager.load_setuptools_entrypoints(hookspecs.PROJECT)
    for module_name in filter(None, os.environ.get(EXPLICIT_PLUGINS_VARIABLE, "").split(",")):
        module = importlib.import_module(module_name.strip())
        if not manager.is_registered(module):
            manager.register(module, name=module_name.strip())
    for plugin in extra_plugins:
        manager.register(plugin)
    return manager


def build_registry(extra_plugins: tuple[ModuleType | object, ...] = ()) -> Registry:
    """Call every registration hook and index the results; name clashes are errors."""
    manager = plugin_manager(extra_plugins)
    distributions = {id(plugin): dist.project_name for plugin, dist in manager.list_plugin_distinfo()}
    registry = Registry(autoload=not os.environ.get(AUTOLOAD_OFF_VARIABLE))
    for kind, (hook_name, base) in KINDS.items():
        hook = getattr(manager.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin_name = getattr(impl.plugin, "__name__", None) or manager.get_name(impl.plugin) or repr(impl.plugin)
            for component in impl.function() or []:
                if not isinstance(component, base):
                    raise ConfigError(
                        f"plugin {plugin_name} returned {component!r} from {hook_name}; "
                        f"it must be a {base.__name__} instance"
                    )
                if kind == "scorer":
                    _check_objectives(component, plugin_name)
                existing = registry.entries[kind].get(component.name)
                if existing is not None:
                    raise ConfigError(
                        f"{kind} {component.name!r} is provided by both {existing.plugin} and "
                        f"{plugin_name}; uninstall one of them"
                    )
                registry.entries[kind][component.name] = Entry(
                    kind=kind,
                    name=component.name,
                    component=component,
                    plugin=plugin_name,
                    distribution=distributions.get(id(impl.plugin), "(registered in process)"),
                )
    return registry
