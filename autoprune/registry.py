"""Discovers plugins and indexes the components they provide by kind and name.

A plugin that cannot be used (its module fails to import, it implements a hook that does not
exist, a hook raises or returns something that is not a component) is *broken*: it is left out
whole, reported once as a warning on stderr and listed by ``autoprune plugins``, and every other
plugin still works. Two working plugins providing the same name stay a hard error.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import logging
import os
import traceback
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from autoprune import hookspecs
from autoprune.components import Allocation, Compressor, PruningMetric, Scorer
from autoprune.errors import ConfigError

AUTOLOAD_OFF_VARIABLE = "AUTOPRUNE_DISABLE_PLUGIN_AUTOLOAD"
EXPLICIT_PLUGINS_VARIABLE = "AUTOPRUNE_PLUGINS"
EXPLICIT = f"({EXPLICIT_PLUGINS_VARIABLE})"  # the distribution shown for modules named there
IN_PROCESS = "(registered in process)"  # ... and for plugins passed to build_registry

# kind -> (hook name, component base class)
KINDS: dict[str, tuple[str, type]] = {
    "metric": ("register_metrics", PruningMetric),
    "allocation": ("register_allocations", Allocation),
    "compressor": ("register_compressors", Compressor),
    "scorer": ("register_scorers", Scorer),
}

# Plugin problems always go to stderr (through logging's last-resort handler unless a handler is
# added to this logger), not into the study log the CLI writes to stdout.
log = logging.getLogger("autoprune.plugins")
log.propagate = False
_reported: set[str] = set()


@dataclass(frozen=True)
class Entry:
    """One registered component and where it came from."""

    kind: str
    name: str
    component: Any
    plugin: str
    distribution: str


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin was found: an entry point of a distribution, AUTOPRUNE_PLUGINS, or the caller."""

    name: str  # the entry point's name, the module's name, or the in-process plugin's name
    distribution: str  # the distribution's name; EXPLICIT or IN_PROCESS for plugins not found by entry point
    entry_point: str = ""  # 'name = "module"' for an entry point
    module: str = ""  # the module the plugin is loaded from, when known

    @property
    def origin(self) -> str:
        if self.entry_point:
            return f"entry point {self.entry_point}"
        return f"named in {EXPLICIT_PLUGINS_VARIABLE}" if self.distribution == EXPLICIT else "registered in process"

    @property
    def label(self) -> str:
        """Short: an entry point's distribution (with the entry point when that is not in its name), else the name."""
        if self.entry_point:
            return self.distribution if self.name in self.distribution else f"{self.distribution} ({self.name})"
        return f"{self.name} {EXPLICIT}" if self.distribution == EXPLICIT else self.name

    @property
    def aliases(self) -> set[str]:
        """Names a user might select a component of this plugin by."""
        return {self.name, self.module.rpartition(".")[2]} - {""}


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin left out of the registry, and why (`problem` is one line)."""

    source: PluginSource
    problem: str  # 'failed to import: ModuleNotFoundError: ...', 'register_metrics raised ...'
    detail: str = ""  # said in the warning only: where the error was raised, the known hooks

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def distribution(self) -> str:
        return self.source.distribution

    def warning(self) -> str:
        source = self.source
        if source.entry_point:
            who, fix = source.distribution, "uninstall it or fix it"
        elif source.distribution == EXPLICIT:
            who, fix = source.name, f"fix it or remove it from {EXPLICIT_PLUGINS_VARIABLE}"
        else:
            who, fix = source.name, "fix it"
        return f"autoprune: warning: plugin {who!r} ({source.origin}) {self.problem}{self.detail}; {fix}"


@dataclass
class Registry:
    """All components of all loaded plugins, looked up by kind and name."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {kind: {} for kind in KINDS})
    autoload: bool = True
    broken: list[BrokenPlugin] = field(default_factory=list)

    def get(self, kind: str, name: str) -> Any:
        entry = self.entries[kind].get(name)
        if entry is not None:
            return entry.component
        raise ConfigError(self.unknown_phrase(kind, name))

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def unknown_phrase(self, kind: str, name: str) -> str:
        for broken in self.broken:
            if name in broken.source.aliases:
                return (
                    f"{kind} {name!r} is unavailable: the plugin {broken.source.label}, which probably "
                    f"provides it, {broken.problem}; fix or uninstall it (see autoprune plugins)"
                )
        return f"unknown {kind} {name!r}; {self.known_phrase(kind)}"

    def known_phrase(self, kind: str) -> str:
        names = self.names(kind)
        if names:
            phrase = f"known {kind}s: {', '.join(names)}"
        else:
            hint = f" (plugin auto-loading is off: unset {AUTOLOAD_OFF_VARIABLE})" if not self.autoload else ""
            phrase = f"no {kind}s are installed{hint}"
        if self.broken:
            problems = "; ".join(f"{broken.source.label} {broken.problem}" for broken in self.broken)
            phrase += f" (broken plugins, not loaded: {problems}; see autoprune plugins)"
        return phrase

    def metric(self, name: str) -> PruningMetric:
        return self.get("metric", name)

    def allocation(self, name: str) -> Allocation:
        return self.get("allocation", name)

    def compressor(self, name: str) -> Compressor:
        return self.get("compressor", name)

    def scorer(self, name: str) -> Scorer:
        return self.get("scorer", name)


@dataclass
class LoadedPlugins:
    """A plugin manager with every plugin that loaded, where each came from, and those that did not."""

    manager: pluggy.PluginManager
    sources: dict[str, PluginSource] = field(default_factory=dict)  # by name registered in the manager
    broken: list[BrokenPlugin] = field(default_factory=list)

    def source(self, plugin: object) -> PluginSource:
        registered = self.manager.get_name(plugin) or ""
        return self.sources.get(registered) or PluginSource(_display_name(plugin), IN_PROCESS)

    def fail(self, plugin: object, problem: str, detail: str = "") -> None:
        """Record the plugin as broken and take it out of the manager."""
        self.broken.append(BrokenPlugin(self.source(plugin), problem, detail))
        if self.manager.is_registered(plugin):
            self.manager.unregister(plugin)

    def register(self, plugin: object, name: str | None, source: PluginSource) -> None:
        if self.manager.is_registered(plugin):
            return  # the same module found twice (an entry point also named in AUTOPRUNE_PLUGINS)
        if name is not None and self.manager.get_plugin(name) is not None:
            name = f"{source.distribution}:{name}"  # two distributions with the same entry-point name
        try:
            registered = self.manager.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as error:
            self.broken.append(BrokenPlugin(source, f"is not a valid plugin: {_one_line(error)}"))
            if self.manager.is_registered(plugin):  # registration stops half-way on a bad hook signature
                self.manager.unregister(plugin)
            return
        if registered is not None:
            self.sources[registered] = source


def _display_name(plugin: object) -> str:
    name = getattr(plugin, "__name__", None)
    if isinstance(name, str):
        return name
    return f"{type(plugin).__module__}.{type(plugin).__qualname__}()"


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _raised_at(error: BaseException) -> str:
    """' (at FILE:LINE)' for the innermost frame outside the import machinery and this module."""
    skip = (os.path.dirname(importlib.__file__) + os.sep, __file__)
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith("<") and not frame.filename.startswith(skip)
    ]
    if isinstance(error, SyntaxError) or not frames:
        return ""  # a SyntaxError already names its file and line
    return f" (at {frames[-1].filename}:{frames[-1].lineno})"


def _load_entry_points(loaded: LoadedPlugins) -> None:
    for entry_point in importlib.metadata.entry_points(group=hookspecs.PROJECT):
        distribution = entry_point.dist.name if entry_point.dist is not None else "(unknown distribution)"
        declared = f'{entry_point.name} = "{entry_point.value}"'
        source = PluginSource(entry_point.name, distribution, declared, entry_point.module)
        try:
            plugin = entry_point.load()
        except Exception as error:
            loaded.broken.append(BrokenPlugin(source, f"failed to import: {_one_line(error)}", _raised_at(error)))
            continue
        loaded.register(plugin, entry_point.name, source)


def _load_explicit(loaded: LoadedPlugins) -> None:
    named = (name.strip() for name in os.environ.get(EXPLICIT_PLUGINS_VARIABLE, "").split(","))
    for module_name in filter(None, named):
        source = PluginSource(module_name, EXPLICIT, module=module_name)
        try:
            module = importlib.import_module(module_name)
        except Exception as error:
            loaded.broken.append(BrokenPlugin(source, f"failed to import: {_one_line(error)}", _raised_at(error)))
            continue
        loaded.register(module, module_name, source)


def _drop_unknown_hooks(loaded: LoadedPlugins) -> None:
    """Report, and leave out, every plugin implementing a hook no spec declares (a misspelt name)."""
    manager = loaded.manager
    known = sorted(name for name, caller in vars(manager.hook).items() if name[0] != "_" and caller.has_spec())
    dropped: list[object] = []
    while True:
        try:
            manager.check_pending()
            return
        except pluggy.PluginValidationError as error:
            plugin = error.plugin
            if any(plugin is seen for seen in dropped):
                raise  # could not be taken out of the manager: never loop
            dropped.append(plugin)
            unknown = sorted(
                caller.name
                for caller in manager.get_hookcallers(plugin) or []
                if not caller.has_spec()
                and any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls())
            )
            guesses = [match for name in unknown for match in difflib.get_close_matches(name, known, n=1)]
            problem = f"implements unknown hook{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
            if guesses:
                problem += f" (did you mean {', '.join(guesses)}?)"
            loaded.fail(plugin, problem, f"; the hooks are {', '.join(known)}")


def load_plugins(extra_plugins: tuple[ModuleType | object, ...] = ()) -> LoadedPlugins:
    """Every installed plugin that imports and declares only known hooks, unless auto-loading is off."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    loaded = LoadedPlugins(manager)
    if not os.environ.get(AUTOLOAD_OFF_VARIABLE):
        _load_entry_points(loaded)
    _load_explicit(loaded)
    for plugin in extra_plugins:
        loaded.register(plugin, None, PluginSource(_display_name(plugin), IN_PROCESS))
    _drop_unknown_hooks(loaded)
    return loaded


def _objectives_problem(scorer: Scorer) -> str | None:
    if not scorer.objectives:
        return f"scorer {scorer.name!r} declares no objectives"
    for objective, direction in scorer.objectives.items():
        if direction not in ("minimize", "maximize"):
            return (
                f"scorer {scorer.name!r} gives objective {objective!r} the direction {direction!r}; "
                "use 'minimize' or 'maximize'"
            )
    return None


def _components_problem(result: Any, hook_name: str, kind: str, base: type) -> str | None:
    if not isinstance(result, (list, tuple)):
        return f"{hook_name} returned {result!r:.80}, not a list of {base.__name__} instances"
    for component in result:
        if not isinstance(component, base):
            return f"{hook_name} returned {component!r:.80}, not a {base.__name__} instance"
        name = getattr(component, "name", None)
        if not isinstance(name, str) or not name:
            return f"{hook_name} returned a {type(component).__name__} without a name"
        if kind == "scorer" and (problem := _objectives_problem(component)):
            return problem
    return None


def report_broken(broken: list[BrokenPlugin]) -> None:
    """Warn once per process about each broken plugin."""
    for plugin in broken:
        message = plugin.warning()
        if message not in _reported:
            _reported.add(message)
            log.warning(message)


def build_registry(extra_plugins: tuple[ModuleType | object, ...] = ()) -> Registry:
    """Call every registration hook and index the results; broken plugins are left out and reported.

    A plugin is used whole or not at all: if one of its hooks raises or returns something that
    is not a component, none of its components are registered. Name clashes between working
    plugins are errors.
    """
    loaded = load_plugins(extra_plugins)
    provided: dict[str, list[tuple[object, list[Any]]]] = {kind: [] for kind in KINDS}
    failed: set[int] = set()
    for kind, (hook_name, base) in KINDS.items():
        for impl in getattr(loaded.manager.hook, hook_name).get_hookimpls():
            if id(impl.plugin) in failed:
                continue
            try:
                result = impl.function()
            except Exception as error:
                problem: str | None = f"{hook_name} raised {_one_line(error)}"
                detail = _raised_at(error)
            else:
                result = [] if result is None else result
                problem, detail = _components_problem(result, hook_name, kind, base), ""
            if problem is not None:
                failed.add(id(impl.plugin))
                loaded.fail(impl.plugin, problem, detail)
                continue
            provided[kind].append((impl.plugin, list(result)))
    report_broken(loaded.broken)
    registry = Registry(autoload=not os.environ.get(AUTOLOAD_OFF_VARIABLE), broken=loaded.broken)
    for kind, plugins in provided.items():
        for plugin, components in plugins:
            if id(plugin) in failed:
                continue
            source = loaded.source(plugin)
            plugin_name = _display_name(plugin)
            for component in components:
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
                    distribution=source.distribution,
                )
    return registry
