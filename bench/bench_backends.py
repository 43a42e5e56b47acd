"""The same study run by the local backend and by Ray Tune with two workers, side by side, in one run.

    python bench/bench_backends.py [--rounds N] [HYDRA OVERRIDES...]

Runs the default study with 20 trials (or the one the overrides describe) with each backend, each
time with fresh Optuna and MLflow stores and an empty statistics cache in a temporary directory:
in this process (`search.backend=local`, torch's default threads), and on a Ray started for it
with 2 CPUs and 2 trials at a time, one CPU (one torch thread) each. Each round runs both, the
order alternating from round to round so that a change in the machine's load falls on both;
the table shows the median over rounds. Prints the wall times, Ray's fixed cost (starting Ray,
a worker's first context build, stopping Ray) and what a trial costs in each.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
from collections.abc import Callable

BACKENDS = {
    "local": ["search.backend=local"],
    "ray, 2 workers": ["search.backend=ray", "ray.num_cpus=2", "ray.max_concurrent_trials=2"],
}
Seconds = dict[str, list[float]]


def run(overrides: list[str]) -> Seconds:
    from autoprune.config import compose_config
    from autoprune.study import run_study

    with tempfile.TemporaryDirectory() as workdir:
        config = compose_config(
            [
                f"mlflow.tracking_uri=sqlite:///{workdir}/mlflow.db",
                f"study.storage=sqlite:///{workdir}/optuna.db",
                f"calibration.cache_dir={workdir}/stats",
                "study.name=bench",
                "search.n_trials=20",
                "progress=false",
                *overrides,
            ]
        )
        result = run_study(config)
    assert result.ran == config.search.n_trials, result.ran
    return result.seconds


FIGURES: list[tuple[str, Callable[[Seconds], float | None]]] = [
    ("study wall time", lambda s: s["total"][0]),
    (
        "  load, data, calibration, dense scores",
        lambda s: sum(sum(s[p]) for p in ("load", "data", "calibration", "prepare")),
    ),
    ("  Ray start (ray.init)", lambda s: sum(s["ray_start"]) if s.get("ray_start") else None),
    ("  a worker's context build (slowest)", lambda s: max(s["worker_build"]) if s.get("worker_build") else None),
    ("  Ray stop", lambda s: sum(s["ray_stop"]) if s.get("ray_stop") else None),
    (
        "  Ray's fixed cost (start + build + stop)",
        lambda s: sum(s["ray_start"]) + max(s["worker_build"]) + sum(s["ray_stop"]) if s.get("ray_start") else None,
    ),
    ("median trial (compress + score)", lambda s: statistics.median(c + t for c, t in zip(s["compress"], s["score"]))),
    ("median restore", lambda s: statistics.median(s["restore"])),
]


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(description="local vs Ray Tune backend on one study")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each backend, alternating which goes first")
    options, overrides = parser.parse_known_args(args)
    rounds = options.rounds
    logging.basicConfig(level=logging.WARNING)
    names = list(BACKENDS)
    measured: dict[str, list[Seconds]] = {name: [] for name in names}
    loads = [os.getloadavg()[0]]
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            measured[name].append(run([*overrides, *BACKENDS[name]]))
            loads.append(os.getloadavg()[0])

    print(f"20-trial study, {os.cpu_count()} CPU cores, {rounds} rounds; overrides: {' '.join(overrides) or '(none)'}")
    history = ", ".join(f"{load:.1f}" for load in loads)
    print(f"load average (1 min) before the first run and after each: {history} (1 = one core busy)")
    print(f"{'':42}" + "".join(f"{name:>18}" for name in names))
    for label, figure in FIGURES:
        cells = ""
        for name in names:
            values = [figure(seconds) for seconds in measured[name]]
            cells += f"{'-' if None in values else f'{statistics.median(values):.2f} s':>18}"
        print(f"{label:42}{cells}")
    walls = {name: [seconds["total"][0] for seconds in measured[name]] for name in names}
    print(
        f"{'wall time of each round':42}"
        + "".join(f"{' / '.join(f'{w:.0f}' for w in walls[n]) + ' s':>18}" for n in names)
    )
    speed_up = statistics.median(walls[names[0]]) / statistics.median(walls[names[1]])
    print(f"{'speed-up of ray over local':42}{'':>18}{speed_up:>17.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
