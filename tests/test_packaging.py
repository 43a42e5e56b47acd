"""Every config group ships with the package, not only with a source checkout."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_group_is_a_declared_package():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    groups = {f"autoprune_conf.{d.name}" for d in (ROOT / "conf").iterdir() if d.is_dir() and d.name != "__pycache__"}
    assert groups <= set(setuptools["packages"])
    assert groups <= set(setuptools["package-data"])
