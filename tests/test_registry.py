"""Plugins are found through the `autoprune` entry-point group; the core imports none of them."""

from pathlib import Path

import pytest

import autoprune
from autoprune import hookimpl
from autoprune.components import PruningMetric, Scorer
from autoprune.errors import ConfigError
from autoprune.registry import AUTOLOAD_OFF_VARIABLE, EXPLICIT_PLUGINS_VARIABLE, build_registry


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


def test_hooks_must_return_components():
    with pytest.raises(ConfigError, match="must be a Scorer instance"):
        build_registry(extra_plugins=(NotAComponent(),))


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
    with pytest.raises(ConfigError, match="direction 'max'; use 'minimize' or 'maximize'"):
        build_registry(extra_plugins=(BadDirection(),))
