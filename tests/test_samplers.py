"""The samplers: a study records the sampler and seed it was created with and refuses to go on
with others; the genetic samplers' settings reach them, and they breed every parameter of the
space, new values included, whether baselines were queued or not. (Every sampler running a whole
study: tests/test_study.py, test_every_sampler_runs_a_study.)"""

from __future__ import annotations

import optuna
import pytest
from cli_harness import run_cli
from omegaconf import OmegaConf

from autoprune.baselines import build_baselines
from autoprune.config import compose_config
from autoprune.constraints import parse_constraints, violations
from autoprune.errors import ConfigError
from autoprune.samplers import build_sampler, population_size, queued, spanning_value
from autoprune.search import SAMPLER_ATTR, SEED_ATTR, Claim, OptunaSearch, worker_seed
from autoprune.space import SearchSpace
from conftest import study_overrides

OBJECTIVES, DIRECTIONS = ["perplexity", "size_mb"], ["minimize", "minimize"]


def open_search(tmp_path, name: str, *overrides: str, constraints: tuple[str, ...] = ()) -> OptunaSearch:
    config = compose_config([f"study.storage=sqlite:///{tmp_path}/optuna.db", *overrides])
    return OptunaSearch(config.search, name, config.study.storage, OBJECTIVES, DIRECTIONS, constraints=constraints)


def test_a_new_study_records_its_sampler_and_seed_and_each_later_opening_samples_with_its_own(tmp_path):
    first = open_search(tmp_path, "recorded", "+search=nsga3", "search.seed=7")
    second = open_search(tmp_path, "recorded", "+search=nsga3", "search.seed=7")
    assert first.study.user_attrs[SAMPLER_ATTR] == "nsga3" and first.study.user_attrs[SEED_ATTR] == 7
    assert second.study.user_attrs[SEED_ATTR] == 7  # the study seed, not the process's
    assert (first.seed, second.seed) == (7, worker_seed(7, 1)) and second.seed != 7


def test_resuming_with_another_sampler_or_seed_is_refused_in_one_line_before_anything_runs(tmp_path):
    run_synthetic(tmp_path, "resumed", 1, "baselines.allocations=[]")  # a TPE study, seed 1, one trial
    for extra, asked in ((["+search=nsga3", "search.seed=1"], "nsga3 seed 1"), (["search.seed=3"], "tpe seed 3")):
        overrides = study_overrides(tmp_path, name="resumed", trials=2, fresh_mlflow=True)
        outcome = run_cli([*overrides, *extra], tmp_path)
        assert outcome.code == 2, outcome  # not None: the model was never loaded
        assert outcome.stderr.splitlines() == [
            f"autoprune: error: study 'resumed' was run with sampler tpe seed 1; this run asks for {asked}: "
            "resume it with search.sampler=tpe search.seed=1 or use another study.name"
        ]
        assert outcome.created == []  # no MLflow store, no statistics
    assert len(open_search(tmp_path, "resumed", "search.seed=1").study.get_trials()) == 1  # the same go on


def sampler_for(*overrides: str):
    """The sampler a study of perplexity and size_mb would run with these overrides."""
    search = OmegaConf.to_object(compose_config(list(overrides))).search
    return build_sampler(search, 0, len(OBJECTIVES))


def test_population_and_reference_directions_reach_the_genetic_samplers():
    sized = sampler_for("+search=nsga3", "search.n_trials=60")
    assert sized.population_size == population_size(60) == 12
    assert sized._elite_population_selection_strategy._dividing_parameter == 11  # 12 directions, 2 objectives
    assert sampler_for("+search=nsga2", "search.n_trials=10").population_size == 8
    chosen = sampler_for("+search=nsga3", "search.population_size=6", "search.reference_points=[[1,0],[0.2,0.8]]")
    assert chosen.population_size == 6
    assert chosen._elite_population_selection_strategy._reference_points == [[1, 0], [0.2, 0.8]]
    divided = sampler_for("+search=nsga3", "search.reference_divisions=4")
    assert divided._elite_population_selection_strategy._dividing_parameter == 4
    assert sampler_for("+search=nsga2", "search.population_size=5").population_size == 5


def refusal(tmp_path, *args: str) -> str:
    outcome = run_cli(args, tmp_path)
    assert outcome.code == 2 and outcome.created == [], outcome
    [line] = outcome.stderr.splitlines()
    return line.removeprefix("autoprune: error: ")


@pytest.mark.parametrize(
    "args, says",
    [
        (["+search=nsga2", "search.population_size=1"], "search.population_size is 1; use a whole number from 2"),
        (["+search=nsga3", "search.reference_divisions=0"], "search.reference_divisions is 0; use a whole number"),
        (["+search=nsga3", "search.reference_points=[]"], "search.reference_points is []; use a list of points"),
        (["+search=nsga3", "search.reference_points=[[1,0],[1]]"], "is [[1, 0], [1]]; use a list of points of one"),
        (["+search=nsga3", "search.reference_points=[[0,0]]"], "search.reference_points[0] is [0, 0]; use numbers"),
        (["+search=nsga3", "search.reference_points=[[2,0]]"], "[0] is [2, 0]; use numbers from 0 to 1, one per"),
        (
            ["+search=nsga3", "scorers=[perplexity,size]", "search.reference_points=[[1,0,0]]"],
            "search.reference_points has 3 numbers a point, the study 2 objectives; give one number per objective",
        ),
        (
            ["+search=nsga3", "search.reference_points=[[1,0,0]]", "search.reference_divisions=3"],
            "search.reference_points and search.reference_divisions both set; give the points or the divisions",
        ),
        (
            ["search.population_size=10"],
            "search.population_size is a setting of nsga2 and nsga3, not of tpe; drop it or choose +search=nsga3",
        ),
        (["+search=nsga2", "+search.reference_divisions=3"], "a setting of nsga3, not of nsga2; drop it or choose"),
    ],
    ids=lambda value: " ".join(value)[:50] if isinstance(value, list) else None,
)
def test_bad_sampler_settings_are_refused_in_one_line(tmp_path, args, says):
    assert says in refusal(tmp_path, *args)


def synthetic_values(sample: dict) -> dict[str, float]:
    """Perplexity-like and size-like objectives of a prune sample, without a model: the sparser,
    the smaller and the worse, better with wanda and with offsets that favour the later blocks."""
    prune = sample["prune"]
    shape = sum(offset * (i - 2.5) for i, offset in enumerate(prune.get("offsets", [0.0] * 6)))
    quality = (1 + 4 * prune["sparsity"] ** 3) * (0.95 if prune["metric"] == "wanda" else 1.0) * (1 - shape)
    return {"perplexity": 100 * quality, "size_mb": 20 * (1 - prune["sparsity"]) + 3}


def run_synthetic(tmp_path, name: str, n_trials: int, *overrides: str, constraints: tuple[str, ...] = ()):
    """A study of the prune space through the real search (storage, baselines, claims, violations
    of `constraints`), scored by `synthetic_values`."""
    settings = ["space=prune", f"search.n_trials={n_trials}", "search.seed=1", *overrides]
    config = OmegaConf.to_object(compose_config(settings))
    space = SearchSpace.parse(config.space)
    bounds = parse_constraints(constraints, OBJECTIVES, [])
    search = open_search(tmp_path, name, *settings, constraints=tuple(map(str, bounds)))
    search.enqueue_baselines(build_baselines(space, config.baselines, 6), n_trials)
    while (claimed := search.claim(n_trials, space, {"prune": 6})) is not Claim.DONE:
        trial, sample = claimed
        values = synthetic_values(sample)
        search.tell(trial, values, violations=violations(bounds, values) if bounds else None)
    return search


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "nsga3"])
def test_with_constraints_the_sampler_proposes_more_feasible_trials(tmp_path, sampler):
    """perplexity <= 120 holds for sparsities below about 0.37, where the size objective does not
    lead: told the violations, the sampler proposes feasible trials more often than the same
    sampler, same seed, without."""
    settings = (f"+search={sampler}", "baselines.allocations=[]", "search.n_startup_trials=8")
    population = ("search.population_size=8",) if sampler != "tpe" else ()

    def feasible_share(name: str, constraints: tuple[str, ...]) -> float:
        trials = run_synthetic(tmp_path, name, 40, *settings, *population, constraints=constraints).study.trials
        return sum(t.values[0] <= 120 for t in trials[8:]) / len(trials[8:])  # after the first random 8

    steered, unsteered = feasible_share("steered", ("perplexity<=120",)), feasible_share("unsteered", ())
    assert steered > unsteered + 0.15, (steered, unsteered)
    assert steered > 0.5


def test_resuming_with_other_constraints_is_refused_in_one_line(tmp_path):
    run_synthetic(tmp_path, "bounded", 1, "baselines.allocations=[]", constraints=("size_mb <= 10",))
    with pytest.raises(ConfigError) as refused:
        run_synthetic(tmp_path, "bounded", 2, "baselines.allocations=[]", constraints=("size_mb<=12",))
    assert str(refused.value) == (
        "study 'bounded' was run with constraints [size_mb<=10]; this run asks for [size_mb<=12]: "
        "resume it with 'constraints=[size_mb<=10]' or use another study.name"
    )
    resumed = run_synthetic(tmp_path, "bounded", 2, "baselines.allocations=[]", constraints=("size_mb<=10",))
    assert len(resumed.study.trials) == 2  # the same constraints go on


@pytest.mark.parametrize("sampler", ["nsga2", "nsga3", "qmc"])
def test_with_baselines_queued_the_sampler_still_covers_every_parameter_of_the_space(tmp_path, sampler):
    """The baselines have no offsets: bred (or walked by the sequence) over their own trials'
    space, the offsets are not left to chance."""
    population = ["search.population_size=4"] if sampler.startswith("nsga") else []
    search = run_synthetic(tmp_path, sampler, 16, f"+search={sampler}", *population, "baselines.sparsities=[0.5]")
    study = search.study
    trials = study.get_trials()
    assert [queued(t) for t in trials] == [True] * 4 + [False] * 12  # 4 baselines first
    space = set(study.sampler.infer_relative_search_space(study, trials[-1]))
    assert {f"prune.offsets.{i}" for i in range(6)} | {"prune.sparsity", "prune.metric"} <= space


def bred_study(sampler: str, n_trials: int) -> optuna.Study:
    """An in-memory study of the prune space with `synthetic_values`, sampled as a study would."""
    config = OmegaConf.to_object(compose_config(["space=prune", f"+search={sampler}", f"search.n_trials={n_trials}"]))
    space = SearchSpace.parse(config.space)
    study = optuna.create_study(directions=DIRECTIONS, sampler=build_sampler(config.search, 1, len(OBJECTIVES)))
    for _ in range(n_trials):
        trial = study.ask()
        values = synthetic_values(space.sample(trial, {"prune": 6}))
        study.tell(trial, [values[name] for name in OBJECTIVES])
    return study


@pytest.mark.parametrize("sampler", ["nsga2", "nsga3"])
def test_the_first_generation_spans_every_range_ends_included(sampler):
    study = bred_study(sampler, 8)  # the population: 8
    first = [t.params for t in study.get_trials()]
    assert sorted(p["prune.sparsity"] for p in first) == pytest.approx([0.2 + 0.6 * k / 7 for k in range(8)])
    assert sorted(p["prune.offsets.3"] for p in first) == pytest.approx([-0.1 + 0.2 * k / 7 for k in range(8)])
    assert sorted(p["prune.metric"] for p in first) == ["magnitude"] * 4 + ["wanda"] * 4
    orders = [[p[f"prune.offsets.{i}"] for p in first] for i in range(6)]
    assert len({tuple(order) for order in orders}) == 6  # each parameter in an order of its own


def test_spanning_values_keep_each_distributions_kind_and_ends():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    assert [spanning_value(IntDistribution(1, 4), k, 4) for k in range(4)] == [1, 2, 3, 4]
    assert [spanning_value(FloatDistribution(1.0, 100.0, log=True), k, 3) for k in range(3)] == pytest.approx(
        [1.0, 10.0, 100.0]
    )
    assert [spanning_value(FloatDistribution(0.0, 1.0, step=0.25), k, 3) for k in range(3)] == [0.0, 0.5, 1.0]
    assert [spanning_value(CategoricalDistribution(["a", "b", "c"]), k, 4) for k in range(4)] == ["a", "b", "c", "a"]


def test_children_take_new_sparsities_not_only_their_parents():
    """Simulated binary crossover: a bred sparsity is mostly one no earlier trial had, so the front
    gains sizes (uniform crossover copies a parent's, new ones only come from mutation)."""
    study = bred_study("nsga3", 40)
    trials = study.get_trials()
    bred = trials[study.sampler.population_size :]
    new = [t for t in bred if all(t.params["prune.sparsity"] != e.params["prune.sparsity"] for e in trials[: t.number])]
    assert len(new) > len(bred) / 3, (len(new), len(bred))
