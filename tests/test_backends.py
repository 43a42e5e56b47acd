"""The backend seam: backends by name (built-in and from entry points), and the settings of the Ray
backend refused in one line before any compute, as every other setting is."""

from __future__ import annotations

import importlib.util
from importlib.metadata import EntryPoint
from unittest import mock

import pytest
from cli_harness import run_cli
from test_validation import refused

from autoprune.backends import ENTRY_POINT_GROUP, Backend, backend_targets, load_backend
from autoprune.backends.local import LocalBackend
from autoprune.errors import ConfigError

RAY = "search.backend=ray"


class InlineBackend(Backend):
    """A third party's backend, as its package would declare it."""

    name = "inline"

    def run(self, study):
        raise NotImplementedError


def test_built_in_backends_load_by_name():
    assert isinstance(load_backend("local"), LocalBackend)
    assert load_backend("ray").name == "ray"


def test_a_package_adds_a_backend_through_its_entry_points():
    entry = EntryPoint("inline", f"{__name__}:InlineBackend", ENTRY_POINT_GROUP)
    with mock.patch("autoprune.backends.entry_points", return_value=[entry]):
        assert sorted(backend_targets()) == ["inline", "local", "ray"]
        assert isinstance(load_backend("inline"), InlineBackend)
        with pytest.raises(ConfigError, match=r"^unknown search.backend 'slurm'; known backends: inline, local, ray$"):
            load_backend("slurm")


def test_a_backend_that_does_not_import_is_named_with_the_fix():
    entry = EntryPoint("broken", "no_such_package.backend:Backend", ENTRY_POINT_GROUP)
    with mock.patch("autoprune.backends.entry_points", return_value=[entry]):
        with pytest.raises(ConfigError) as raised:
            load_backend("broken")
    assert str(raised.value).startswith("search.backend=broken: no_such_package.backend:Backend failed to import")


@pytest.mark.parametrize(
    "args, says",
    [
        (["search.backend=slurm"], "unknown search.backend 'slurm'; known backends: local, ray"),
        (["ray.address=ray://head:10001"], "ray.address is 'ray://head:10001'; use auto or the HOST:PORT"),
        (["ray.resources_per_trial.cpu=0"], "ray.resources_per_trial.cpu is 0.0; use a number from 0.1 to 1024.0"),
        (["ray.max_concurrent_trials=0"], "ray.max_concurrent_trials is 0; use a whole number from 1 to 100000"),
        (
            [RAY, "ray.num_cpus=2", "ray.resources_per_trial.cpu=4"],
            "ray.resources_per_trial.cpu is 4, but the Ray this study starts has 2 CPUs; "
            "use ray.resources_per_trial.cpu=2 or less",
        ),
        ([RAY, "ray.resources_per_trial.gpu=1"], "ray.resources_per_trial.gpu is 1, but this machine has 0 GPUs"),
        (
            [RAY, "ray.address=127.0.0.1:9"],
            "ray.address is '127.0.0.1:9', but no Ray cluster answers there within 3 s",
        ),
        (
            [RAY, "ray.address=auto", "ray.num_cpus=2"],
            "ray.num_cpus sizes the Ray a study starts, but ray.address=auto joins a running cluster",
        ),
        (
            [RAY, "model.device=cuda"],
            "model.device is cuda, but Ray hides the GPUs from trials that reserve none; "
            "use ray.resources_per_trial.gpu=1",
        ),
    ],
)
def test_bad_backend_settings_are_one_line_before_compute(tmp_path, args, says):
    assert says in refused(tmp_path, *args)


def test_ray_address_auto_needs_a_running_cluster(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # where `ray start` would have left its address
    line = refused(tmp_path, RAY, "ray.address=auto")
    assert line.startswith("ray.address is 'auto', but no Ray cluster runs on this machine")


def test_the_ray_settings_of_a_local_study_are_not_probed(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert run_cli(["ray.address=auto"], tmp_path, stop_after_checks=True).code is None


def test_the_ray_backend_without_ray_installed_says_how_to_install_it(tmp_path):
    real = importlib.util.find_spec

    def without_ray(name, *args):
        return None if name == "ray" else real(name, *args)

    with mock.patch("importlib.util.find_spec", without_ray):
        line = refused(tmp_path, RAY)
    assert line == (
        "search.backend=ray needs Ray Tune, which is not installed; "
        "pip install 'ray[tune]' (or install autoprune with its ray extra)"
    )
