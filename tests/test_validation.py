"""Every bad input stops before compute with one line naming the key and the fix, exit code 2, and
nothing written; each class of mistake shown once per row. The fuzz test covers the rest."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
from cli_harness import run_cli

from autoprune.errors import ConfigError
from autoprune.plan import check_section_keys
from autoprune.plugin import Compressor
from autoprune.registry import build_registry
from autoprune.validation import Each, OneOf, Range, check_fields, rules


def refused(tmp_path, *args: str) -> str:
    """The one error line of a run that must stop before compute, having created nothing."""
    outcome = run_cli(args, tmp_path)
    assert outcome.code == 2, (outcome.code, outcome.stderr)
    [line] = outcome.stderr.splitlines()
    assert line.startswith("autoprune: error: ")
    assert outcome.created == []
    return line.removeprefix("autoprune: error: ")


def case(*args: str, says: str):
    return pytest.param(list(args), says, id=" ".join(args)[:60])


SCHEMA = [  # types and ranges declared on the structured config's fields
    case("search.n_trials=abc", says="search.n_trials is 'abc'; use a whole number"),
    case("search.n_trials=0", says="search.n_trials is 0; use a whole number from 1 to 100000"),
    case("search.n_trials=10000000", says="search.n_trials is 10000000; use a whole number from 1 to 100000"),
    case("search.seed=-1", says="search.seed is -1; use a whole number from 0 to 4294967295"),
    case("data.seed=4294967296", says="data.seed is 4294967296; use a whole number from 0 to 4294967295"),
    case("search.n_trials=1.5", says="search.n_trials is 1.5; use a whole number"),
    case("search.n_trials=true", says="search.n_trials is True; use a whole number"),
    case("search.n_trials=[1,[2]]", says="search.n_trials is [1, [2]]; use a whole number"),
    case("search.n_trials=null", says="search.n_trials is null; use a whole number"),
    case("search.max_failures=0", says="search.max_failures is 0; use a whole number from 1 to 100000"),
    case("+search=nsga3", "search.population_size=1", says="search.population_size is 1; use a whole number from 2"),
    case("data.calib_windows=0", says="data.calib_windows is 0; use a whole number from 1 to 1000000"),
    case("data.eval_windows=-3", says="data.eval_windows is -3; use a whole number from 1 to 1000000"),
    case("calibration.batch_size=100000", says="calibration.batch_size is 100000; use a whole number from 1 to 4096"),
    case("calibration.cache=maybe", says="calibration.cache is 'maybe'; use true or false"),
    case("baselines.sparsities=[0.5,1.5]", says="baselines.sparsities[1] is 1.5; use a number from 0.0 to 0.99"),
    case("baselines.sparsities=[nan]", says="baselines.sparsities[0] is nan; use a number from 0.0 to 0.99"),
    case("scorers=[perplexity,[x]]", says="scorers[1] is ['x']; use a string"),
    case("model.dtype=float8", says="unknown model.dtype 'float8'; choose one of float32, float16, bfloat16"),
    case("calibration.mode=lazy", says="unknown calibration.mode 'lazy'; choose one of dense-once, sequential"),
    case("search.sampler=cmaes", says="unknown sampler 'cmaes'; known samplers: nsga2, nsga3, qmc, random, tpe"),
    case("mlflow.experiment=''", says="mlflow.experiment is ''; use a non-empty string"),
    case("study.name=a/b", says="study.name is 'a/b'; use a name of letters, digits"),
    case("model.name='ünï'", says="model.name is 'ünï'; use a name of letters, digits"),
    case("model.hub_id=../..", says="model.hub_id is '../..'; use a Hugging Face model id"),
    case("model.context=0", says="model.context is 0; use a whole number from 1 to 1048576"),
    case("model.kv_group_size=0", says="model.kv_group_size is 0; use a whole number from 1 to 4096"),
    case("model.kv_residual=-1", says="model.kv_residual is -1; use a whole number from 0 to 1048576"),
    case("serving.context_length=0", says="serving.context_length is 0; use a whole number from 1 to 1048576"),
    case("serving.batch_size=0", says="serving.batch_size is 0; use a whole number from 1 to 4096"),
    case("serving.batch_size=1.5", says="serving.batch_size is 1.5; use a whole number"),
    case("baselines.kv_bits=[4,5]", says="baselines.kv_bits[1] is 5; use one of 2, 3, 4, 6, 8, 16 (16: not quantized)"),
]

COMMAND_LINE = [  # Hydra's own errors: parsing, config groups, keys that need `+`
    case("spärsity=1", says="cannot parse the override 'spärsity=1': unexpected 'ä' at character 3; write KEY=VALUE"),
    case("a=b=c", says="cannot parse the override 'a=b=c': mismatched input '='"),
    case("x=[1,2", says="cannot parse the override 'x=[1,2': unbalanced brackets"),
    case("--foo", says="unknown option '--foo'; autoprune takes plugins, --cfg, --help and KEY=VALUE overrides"),
    case("search.n_trials=1,2", says="is a sweep (values separated by commas); a study takes one value"),
    case("space=nope", says="Could not find 'space/nope'; available options: joint, layers, meta, optishear, prune"),
    case("model=does-not-exist", says="Could not find 'model/does-not-exist'; available options: opt-1.3b, tiny"),
    case("model=[1]", says="model=[1] is not a config of the group model; choose one of opt-1.3b, tiny"),
    case("+search=tpe", "+search=nsga3", says="the config group search is given more than once"),
    case("+model=tiny", says="model is already in the defaults; write model=NAME (without +)"),
    case("search=nsga3", says="To append to your default list use +search=nsga3"),
    case(
        "space.prune.pattern=2:4",
        says="space.prune.pattern is not in the composed config; add it with +space.prune.pattern=2:4",
    ),
    case("data.calibration.paths=[a.txt]", says="add it with +data.calibration.paths=[a.txt]"),
    case("modle.path=x", says="unknown config key 'modle'; did you mean model?"),
    case("+model.pth=x", says="unknown config key 'model.pth'; did you mean model.path?"),
    case("model.name=${nope}", says="cannot resolve an interpolation: Interpolation key 'nope' not found"),
    case("space.prune.metric=[1,[2]]", says="to replace the whole entry, delete it first: ~space.prune.metric"),
]

SPACE = [  # search-space entries and the keys each compressor section takes
    case("+space.prune.patern=2:4", says="unknown key space.prune.patern; did you mean space.prune.pattern?"),
    case(
        "+scoring.nope.x=1",
        says="scoring.nope: unknown scorer 'nope'; known scorers: kv_cache, latency, lm_eval, memory, perplexity",
    ),
    case(
        "+scoring.perplexity.x=1", says="scoring.perplexity: unknown key 'x'; the perplexity scorer takes: no settings"
    ),
    case("+scoring.perplexity=3", says="scoring.perplexity must be a mapping of settings, got 3"),
    case("+space.prune.sparsity.kind=float", says="space.prune.sparsity has unknown keys ['kind']"),
    case("+space.nope.x=1", says="unknown compressor 'nope'; known compressors: kv_cache, prune, remove_layers"),
    case("space.prune.sparsity.low=abc", says="space.prune.sparsity.low is 'abc'; use a finite number"),
    case("space.prune.sparsity.high=[1,2]", says="space.prune.sparsity.high is [1, 2]; use a finite number"),
    case("space.prune.sparsity.low=true", says="space.prune.sparsity.low is True; use a finite number"),
    case("space.prune.sparsity.low=nan", says="space.prune.sparsity.low is nan; use a finite number"),
    case("space.prune.sparsity.high=inf", says="space.prune.sparsity.high is inf; use a finite number"),
    case("+space.prune.sparsity.step=-1", says="space.prune.sparsity.step is -1; use a finite number above 0"),
    case("+space.prune.sparsity.type=str", says="space.prune.sparsity.type is 'str'; use float or int"),
    case("space.prune.metric.choices=[wanda,[x]]", says="space.prune.metric.choices holds ['x']; a choice is a string"),
    case("space.prune.metric.choices=wanda", says="space.prune.metric.choices is 'wanda'; use a list such as [a, b]"),
    case("space.prune.offsets.per_layer=maybe", says="space.prune.offsets.per_layer is 'maybe'; use true or false"),
    case("space.prune.offsets.when={allocation: [[1]]}", says="space.prune.offsets.when.allocation is [[1]]"),
    case("space.prune.metric.choices=[wanda9]", says="unknown metric 'wanda9'; known metrics:"),
    case("space.prune.sparsity=1.0", says="space.prune.sparsity takes values in [0, 1) (at most 0.99), got 1.0"),
    case("space.prune.sparsity=false", says="space.prune.sparsity takes values in [0, 1) (at most 0.99), got False"),
    case("space.prune.offsets.low=-5", says="space.prune.offsets takes values in (-1, 1), got -5"),
    case("space.prune.allocation=owl", "+space.prune.owl_m=nan", says="space.prune.owl_m must be a positive number"),
    case("space=layers", "space.remove_layers.count.high=true", says="space.remove_layers.count.high is True"),
]

STORES = [  # where results go: checked without creating anything
    case(
        "study.storage=sqlite:////nonexistent/x.db",
        says="study.storage is 'sqlite:////nonexistent/x.db', but the directory /nonexistent does not exist",
    ),
    case(
        "study.storage=journal:////nonexistent/j.log",
        says="study.storage is 'journal:////nonexistent/j.log', but the directory /nonexistent does not exist",
    ),
    case("study.storage=autoprune.db", says="study.storage is 'autoprune.db', but it is not a URL"),
    case("study.storage=foo://x", says="study.storage is 'foo://x', but it is not a URL this accepts"),
    case("study.storage=sqlite:///.", says="study.storage is 'sqlite:///.', but . is not a readable and writable file"),
    case(
        "mlflow.tracking_uri=/etc/passwd/mlruns",
        says="mlflow.tracking_uri is '/etc/passwd/mlruns', but it would be created under /etc/passwd, which is not a writable directory",
    ),
    case(
        "mlflow.tracking_uri=sqlite:////nonexistent/m.db",
        says="mlflow.tracking_uri is 'sqlite:////nonexistent/m.db', but the directory /nonexistent does not exist",
    ),
    case(
        "calibration.cache_dir=/etc/passwd/stats",
        says="calibration.cache_dir is '/etc/passwd/stats', but it would be created under /etc/passwd",
    ),
]

MACHINE = [  # the model, the data and the device, read without loading anything
    case("model.device=cuda:99", says="model.device is 'cuda:99', which this machine does not have; use one of cpu"),
    case("model.device=tpu", says="model.device is 'tpu', which this machine does not have"),
    case(
        "model.context=4096",
        says="model.context is 4096, but the model has 128 positions; use model.context=128 or less",
    ),
    case(
        "serving.context_length=4096",
        says="serving.context_length is 4096, but the model has 128 positions; use serving.context_length=128 or less",
    ),
    case(
        "model.path=/no/such/model", says="model.path '/no/such/model' is not a directory; set model.path=<local dir>"
    ),
    case("data.calibration.source=files", says="data.calibration.paths is empty; list the text files to read"),
    case(
        "data.calibration.source=files",
        "+data.calibration.paths=[/nonexistent/x.txt]",
        says="data.calibration.paths[0]: '/nonexistent/x.txt' is not a file",
    ),
    case(
        "data.calib_windows=1000000",
        "calibration.mode=sequential",
        says="data.calib_windows=1000000 windows of 128 tokens need about 123.0 GiB",
    ),
]


@pytest.mark.parametrize("args, says", SCHEMA + COMMAND_LINE + SPACE + STORES + MACHINE)
def test_bad_input_is_one_line_with_the_key_and_the_fix(tmp_path, args, says):
    assert says in refused(tmp_path, *args)


def test_a_tracking_server_that_does_not_answer_fails_in_seconds(tmp_path):
    started = time.perf_counter()
    line = refused(tmp_path, "mlflow.tracking_uri=http://127.0.0.1:9")
    assert "nothing answers at 127.0.0.1:9 within 3 s" in line
    assert time.perf_counter() - started < 10


def test_a_text_file_shorter_than_one_window_is_refused_before_loading(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("too short")
    args = ["data.calibration.source=files", f"+data.calibration.paths=[{short}]"]
    assert "fewer than one window of 128 tokens" in refused(tmp_path, *args)


def test_valid_input_reaches_the_model_loader(tmp_path):
    args = ["search.n_trials=2", "space.prune.metric.choices=[wanda]", "+space.prune.pattern=2:4", "model.device=cpu"]
    outcome = run_cli(args, tmp_path)
    assert outcome.code is None, outcome.stderr  # past every check, at the model load
    assert outcome.stderr == ""


def test_a_storage_file_in_a_writable_directory_may_be_absent(tmp_path):
    (tmp_path / "runs").mkdir()
    args = ["study.storage=journal:///runs/study.log", "mlflow.tracking_uri=runs/mlruns", "calibration.cache_dir='~/c'"]
    assert run_cli(args, tmp_path, stop_after_checks=True).code is None


# --- the mechanism: a section declares its rules and is checked with nothing else to write ---


@dataclass
class LatencySection:  # a section added later: its fields' rules are all it takes
    prompt_tokens: int = field(default=128, metadata=rules(Range(1, 8192)))
    repeats: int = field(default=5, metadata=rules(Range(1, 1000)))
    mode: str = field(default="decode", metadata=rules(OneOf(("prefill", "decode"))))
    lengths: list[int] = field(default_factory=lambda: [16], metadata=rules(Each(Range(1, 4096))))


@dataclass
class WithLatency:
    latency: LatencySection = field(default_factory=LatencySection)


@pytest.mark.parametrize(
    "settings, says",
    [
        ({"repeats": 0}, "latency.repeats is 0; use a whole number from 1 to 1000"),
        ({"mode": "fast"}, "unknown latency.mode 'fast'; choose one of prefill, decode"),
        ({"lengths": [16, 0]}, "latency.lengths[1] is 0; use a whole number from 1 to 4096"),
        ({"prompt_tokens": "many"}, "latency.prompt_tokens is 'many'; use a whole number"),
    ],
)
def test_a_new_section_is_validated_by_declaring_its_fields(settings, says):
    with pytest.raises(ConfigError) as raised:
        check_fields(WithLatency(LatencySection(**settings)))
    assert says == str(raised.value)
    check_fields(WithLatency())  # the defaults pass


class Quantize(Compressor):
    name = "quantize"
    params = ("bits",)

    def apply(self, context, params, journal):
        return {}


def test_a_compressor_section_takes_only_the_keys_its_compressor_declares():
    registry = build_registry()
    check_section_keys(Quantize(), {"bits": 4}, registry)
    with pytest.raises(ConfigError, match=r"^unknown key space.quantize.bit; did you mean space.quantize.bits\? "):
        check_section_keys(Quantize(), {"bit": 4}, registry)


def test_stores_mixed_up_are_refused_before_they_are_opened(tmp_path):
    import sqlite3

    sqlite3.connect(tmp_path / "optuna.db").execute("create table t (x)").connection.close()
    (tmp_path / "notes.txt").write_text("not a journal\n")
    cases = {
        "study.storage=journal:///optuna.db": "optuna.db is an SQLite database, not a journal (use sqlite:///optuna.db)",
        "study.storage=journal:///notes.txt": "notes.txt is not an Optuna journal",
    }
    for arg, says in cases.items():
        assert says in refused(tmp_path, arg)
    same = refused(tmp_path, "study.storage=sqlite:///one.db", "mlflow.tracking_uri=sqlite:///one.db")
    assert "study.storage and mlflow.tracking_uri are the same file 'one.db'" in same


def test_a_section_that_cannot_work_on_the_model_is_refused_from_its_config_before_loading(tmp_path):
    line = refused(tmp_path, "space=layers", "space.remove_layers.count.high=6")
    assert line == ("space.remove_layers.count goes up to 6, but the model has only 6 blocks; keep it below 6")
