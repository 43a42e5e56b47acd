"""Plugins are found through the `autoprune` entry-point group; the core imports none of them."""

import textwrap
from pathlib import Path

import pytest

import autoprune
from autoprune import hookimpl
from autoprune.cli import list_plugins
from autoprune.components import PruningMetric, Scorer
from autoprune.errors import ConfigError
from autoprune.registry import AUTOLOAD_OFF_VARIABLE, EXPLICIT_PLUGINS_VARIABLE, IN_PROCESS, build_registry


def test_builtins_come_from_the_autoprune_distribution():
    registry = build_registry()
    assert {"magnitude", "wanda"} <= set(registry.names("metric"))
    assert {"perplexity", "size"} <= set(registry.names("scorer"))
    assert {"uniform", "searched"} <= set(registry.names("allocation"))
    assert "prune" in registry.names("compressor")
    entry = registry.entries["metric"]["wanda"]
    assert entry.distribution == "autoprune" and entry.plugin == "autoprune_plugins.metrics.wanda"


def test_core_imports_no_plugin():
    core = Path(autoprune.__file__).parent
    offenders = [p.name for p in core.rglob("*.py") if "autoprune_plugins" in p.read_text()]
    assert offenders == []


def test_autoload_can_be_turned_off_and_modules_loaded_explicitly(monkeypatch):
    monkeypatch.setenv(AUTOLOAD_OFF_VARIABLE, "1")
    registry = build_registry()
    assert registry.names("metric") == []
    with pytest.raises(ConfigError, match="no metrics are installed.*auto-loading is off"):
        registry.metric("wanda")
    monkeypatch.setenv(EXPLICIT_PLUGINS_VARIABLE, "autoprune_plugins.metrics.wanda")
    assert build_registry().names("metric") == ["wanda"]


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ConfigError, match="unknown metric 'nope'; known metrics: .*magnitude.*wanda"):
        build_registry().metric("nope")


class Clash:
    class Magnitude(PruningMetric):
        name = "magnitude"

        def score(self, weight, stats):
            return weight

    @hookimpl
    def register_metrics(self):
        return [self.Magnitude()]


class NotAComponent:
    @hookimpl
    def register_scorers(self):
        return ["perplexity"]


def test_name_clashes_are_errors():
    with pytest.raises(ConfigError, match="metric 'magnitude' is provided by both"):
        build_registry(extra_plugins=(Clash(),))


def test_hooks_must_return_components(caplog):
    registry = build_registry(extra_plugins=(NotAComponent(),))
    [broken] = registry.broken
    assert broken.name == "test_registry.NotAComponent()" and broken.distribution == IN_PROCESS
    assert broken.problem == "register_scorers returned 'perplexity', not a Scorer instance"
    assert {"perplexity", "size"} <= set(registry.names("scorer"))
    assert caplog.messages == [
        "autoprune: warning: plugin 'test_registry.NotAComponent()' (registered in process) "
        "register_scorers returned 'perplexity', not a Scorer instance; fix it"
    ]


class BadDirection:
    class Accuracy(Scorer):
        name = "accuracy9"
        objectives = {"accuracy": "max"}

        def score(self, context):
            return {"accuracy": 1.0}

    @hookimpl
    def register_scorers(self):
        return [self.Accuracy()]


def test_scorer_directions_are_checked_at_registration():
    registry = build_registry(extra_plugins=(BadDirection(),))
    [broken] = registry.broken
    assert broken.problem.endswith("direction 'max'; use 'minimize' or 'maximize'")
    assert "accuracy9" not in registry.names("scorer")


class RaisingHook:
    """Its metric hook works, its scorer hook raises: the plugin is left out whole."""

    class Fine(PruningMetric):
        name = "fine_but_unused"

        def score(self, weight, stats):
            return weight

    @hookimpl
    def register_metrics(self):
        return [self.Fine()]

    @hookimpl
    def register_scorers(self):
        raise RuntimeError("cannot reach the evaluation server")


def test_a_hook_that_raises_marks_its_plugin_broken(caplog):
    registry = build_registry(extra_plugins=(RaisingHook(),))
    [broken] = registry.broken
    assert broken.problem == "register_scorers raised RuntimeError: cannot reach the evaluation server"
    assert "fine_but_unused" not in registry.names("metric") and "wanda" in registry.names("metric")
    [warning] = caplog.messages
    assert warning.startswith("autoprune: warning: plugin 'test_registry.RaisingHook()' (registered in process) ")
    assert "(at " + __file__ in warning


def _modules(tmp_path, monkeypatch, **sources: str) -> None:
    for name, source in sources.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(EXPLICIT_PLUGINS_VARIABLE, ",".join(sources))


MISSPELT = """\
    from autoprune.plugin import PruningMetric, Scorer, hookimpl

    class Accuracy(Scorer):
        name = "accuracy_of_misspelt"
        objectives = {"accuracy": "maximize"}

        def score(self, context):
            return {"accuracy": 1.0}

    class Metric(PruningMetric):
        name = "misspelt_metric"

        def score(self, weight, stats):
            return weight

    @hookimpl
    def register_metric():
        return [Metric()]

    @hookimpl
    def register_scorers():
        return [Accuracy()]
"""


def test_explicit_modules_that_raise_or_misspell_a_hook_are_reported(tmp_path, monkeypatch, caplog):
    _modules(tmp_path, monkeypatch, raising_at_import='raise RuntimeError("no licence key")\n', misspelt=MISSPELT)
    registry = build_registry()
    assert [(b.name, b.distribution, b.problem) for b in registry.broken] == [
        ("raising_at_import", "(AUTOPRUNE_PLUGINS)", "failed to import: RuntimeError: no licence key"),
        ("misspelt", "(AUTOPRUNE_PLUGINS)", "implements unknown hook register_metric (did you mean register_metrics?)"),
    ]
    assert caplog.messages == [
        "autoprune: warning: plugin 'raising_at_import' (named in AUTOPRUNE_PLUGINS) failed to import: "
        f"RuntimeError: no licence key (at {tmp_path}/raising_at_import.py:1); "
        "fix it or remove it from AUTOPRUNE_PLUGINS",
        "autoprune: warning: plugin 'misspelt' (named in AUTOPRUNE_PLUGINS) implements unknown hook register_metric "
        "(did you mean register_metrics?); the hooks are register_allocations, register_compressors, "
        "register_metrics, register_scorers; fix it or remove it from AUTOPRUNE_PLUGINS",
    ]
    # a plugin with a misspelt hook is left out whole, its correct hooks included
    assert "accuracy_of_misspelt" not in registry.names("scorer") and "wanda" in registry.names("metric")
    with pytest.raises(ConfigError) as raised:
        registry.metric("misspelt")
    assert str(raised.value) == (
        "metric 'misspelt' is unavailable: the plugin misspelt (AUTOPRUNE_PLUGINS), which probably provides it, "
        "implements unknown hook register_metric (did you mean register_metrics?); fix or uninstall it "
        "(see autoprune plugins)"
    )
    with pytest.raises(ConfigError, match=r"^unknown scorer 'accuracy'; known scorers: .*size \(broken plugins, not"):
        registry.scorer("accuracy")

    caplog.clear()
    listed = list_plugins().splitlines()
    assert caplog.messages == []  # each problem is warned about once per process
    assert listed[listed.index("broken plugins:") + 1 :] == [
        "  raising_at_import  from (AUTOPRUNE_PLUGINS)  failed to import: RuntimeError: no licence key",
        "  misspelt           from (AUTOPRUNE_PLUGINS)  implements unknown hook register_metric "
        "(did you mean register_metrics?)",
    ]


def test_a_missing_explicit_module_is_reported_not_raised(monkeypatch):
    monkeypatch.setenv(EXPLICIT_PLUGINS_VARIABLE, "no_such_plugin_module")
    registry = build_registry()
    assert [b.problem for b in registry.broken] == [
        "failed to import: ModuleNotFoundError: No module named 'no_such_plugin_module'"
    ]
    assert "wanda" in registry.names("metric")
