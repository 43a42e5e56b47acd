"""A pip-installed plugin whose module fails to import is reported once and every other plugin still works."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autoprune.errors import ConfigError
from autoprune.registry import build_registry
from conftest import study_overrides

WARNING = (
    "autoprune: warning: plugin 'autoprune-broken' (entry point broken = \"broken_mod\") failed to import: "
    "ModuleNotFoundError: No module named 'numpyy' (at {site}/broken_mod.py:2); uninstall it or fix it"
)


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory) -> Path:
    """A site directory holding the distribution autoprune-broken, installed with pip."""
    source = tmp_path_factory.mktemp("autoprune-broken")
    (source / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "autoprune-broken"
            version = "0.1.0"

            [project.entry-points.autoprune]
            broken = "broken_mod"

            [tool.setuptools]
            py-modules = ["broken_mod"]
            """
        )
    )
    (source / "broken_mod.py").write_text('"""Needs a package that is not installed."""\nimport numpyy  # noqa: F401\n')
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    return site


def _autoprune(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "autoprune", *args], env=env, capture_output=True, text=True, cwd=cwd)


def test_plugins_command_warns_once_and_lists_the_broken_plugin(broken_site):
    listed = _autoprune(broken_site, "plugins")
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.splitlines() == [WARNING.format(site=broken_site)]
    lines = listed.stdout.splitlines()
    assert any(line.split() == ["wanda", "autoprune_plugins.metrics.wanda", "from", "autoprune"] for line in lines)
    broken = lines[lines.index("broken plugins:") + 1 :]
    assert [line.split(maxsplit=3) for line in broken] == [
        ["broken", "from", "autoprune-broken", "failed to import: ModuleNotFoundError: No module named 'numpyy'"]
    ]


def test_selecting_what_the_broken_plugin_would_provide_is_one_line_error(broken_site, tmp_path):
    run = _autoprune(
        broken_site, "space.prune.metric.choices=[broken]", *study_overrides(tmp_path, trials=1), cwd=tmp_path
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [
        WARNING.format(site=broken_site),
        "autoprune: error: metric 'broken' is unavailable: the plugin autoprune-broken, which probably provides it, "
        "failed to import: ModuleNotFoundError: No module named 'numpyy'; fix or uninstall it (see autoprune plugins)",
    ]


def test_unknown_names_mention_the_broken_plugin(broken_site, monkeypatch):
    monkeypatch.syspath_prepend(str(broken_site))
    registry = build_registry()
    assert [(b.name, b.distribution) for b in registry.broken] == [("broken", "autoprune-broken")]
    assert {"magnitude", "wanda"} <= set(registry.names("metric"))
    with pytest.raises(ConfigError) as raised:
        registry.metric("nope")
    message = str(raised.value)
    assert message.startswith("unknown metric 'nope'; known metrics: ace, ") and "wanda" in message
    assert message.endswith(
        "(broken plugins, not loaded: autoprune-broken failed to import: ModuleNotFoundError: No module named "
        "'numpyy'; see autoprune plugins)"
    )
