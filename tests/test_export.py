"""Export: a trial of a real study rebuilt on a fresh model and written as a checkpoint that plain
transformers loads, its recipe, the searched KV cache back through `load_compressed`, how a trial
is picked, and every bad argument refused before compute."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import sysconfig

import optuna
import pytest
import torch
from cli_harness import run_cli
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from autoprune import api
from autoprune.cli import main
from autoprune.config import compose_config
from autoprune.data import TextSource, evaluation_windows, read_text, tokenize
from autoprune.export import run_export
from autoprune.model import load_model
from autoprune.pick import parse_pick, pick_trial
from autoprune.recipe import read_recipe, windows_hash
from autoprune.records import read_study
from autoprune.runtime import cache_keyword
from autoprune.study import run_study
from conftest import TINY, study_overrides

TRIALS = 4  # three baselines (uniform magnitude and wanda at 0.5, uniform 4-bit KV), one sampled trial


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A joint study (one block removed, pruning, per-layer KV bits) whose trial 4 failed, and where
    its records are."""
    root = tmp_path_factory.mktemp("export-study")
    overrides = [o for o in study_overrides(root, "export", TRIALS) if not o.startswith(("space=", "scorers="))]
    overrides += [
        "space=joint",
        "scorers=[perplexity,size]",
        "space.remove_layers.count=1",
        "baselines.allocations=[uniform]",
        "baselines.sparsities=[0.5]",
        "baselines.kv_bits=[4]",
    ]
    run_study(compose_config(overrides))
    stores = [next(o for o in overrides if o.startswith(key)) for key in ("study.storage=", "mlflow.tracking_uri=")]
    storage = stores[0].partition("=")[2]
    optuna_study = optuna.load_study(study_name="export", storage=storage)
    optuna_study.tell(optuna_study.ask(), state=optuna.trial.TrialState.FAIL)
    trials = {t.number: t for t in optuna_study.get_trials()}
    return {
        "root": root,
        "where": [*stores, "study.name=export"],
        "stores": stores,
        "storage": storage,
        "trials": trials,
    }


def trial_named(study, baseline: str | None) -> optuna.trial.FrozenTrial:
    """The complete trial of that baseline (None: the sampled one)."""
    return next(
        t
        for t in study["trials"].values()
        if t.state.name == "COMPLETE" and (t.user_attrs.get("autoprune.baseline") or {}).get("name") == baseline
    )


def export(study, tmp_path_factory, *args: str):
    directory = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        return run_export([*study["where"], *args, "out=exported"])


@pytest.fixture(scope="module")
def evaluation(tiny):
    """The study's evaluation windows, made here as the builder makes them."""
    _, tokenizer = tiny
    return evaluation_windows(tokenize(tokenizer, read_text(TextSource(split="eval")), False), 128, 8)


@pytest.fixture(scope="module")
def wanda_export(study, tmp_path_factory):
    trial = trial_named(study, "uniform wanda 0.5")
    return trial, export(study, tmp_path_factory, f"trial={trial.number}", "calibration.mode=dense-once")


@pytest.fixture(scope="module")
def sampled_export(study, tmp_path_factory):
    trial = trial_named(study, None)
    return trial, export(study, tmp_path_factory, f"trial={trial.number}", "calibration.mode=dense-once")


PLAIN_PERPLEXITY = """
import math, sys
try:
    import autoprune
except ImportError:
    pass
else:
    sys.exit("autoprune is importable")
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
windows = torch.load(sys.argv[2])
with torch.no_grad():
    logits = model(windows, use_cache=False).logits[:, :-1].float()
targets = windows[:, 1:]
nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
print(math.exp(nll.item() / targets.numel()))
"""


def test_plain_transformers_without_autoprune_gets_the_trials_perplexity(wanda_export, evaluation, tmp_path):
    trial, exported = wanda_export
    assert windows_hash(evaluation) == exported.recipe.evaluation["data_hash"]
    torch.save(evaluation, tmp_path / "windows.pt")
    site = sysconfig.get_paths()["purelib"]  # torch and transformers, without the .pth that installs autoprune
    script = f"import sys; sys.path.append({site!r})\n{PLAIN_PERPLEXITY}"
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script, str(exported.directory), str(tmp_path / "windows.pt")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(trial.values[0], rel=1e-4)
    assert exported.recipe.perplexity["exported"] == pytest.approx(trial.values[0], rel=1e-4)


def test_removed_blocks_are_gone_from_the_checkpoint(sampled_export):
    _, exported = sampled_export
    removed = exported.recipe.blocks["removed"]
    assert removed == [i for i, gone in enumerate(exported.recipe.reported["remove_layers.removed"]) if gone]
    assert len(removed) == 1
    config = json.loads((exported.directory / "config.json").read_text())
    assert config["num_hidden_layers"] == 5
    stored = load_file(exported.directory / "model.safetensors")
    assert {int(key.split(".")[3]) for key in stored if ".layers." in key} == set(range(5))
    model, loading = AutoModelForCausalLM.from_pretrained(exported.directory, output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"]
    assert len(model.model.decoder.layers) == 5


def test_load_compressed_runs_the_searched_kv_bits(sampled_export, evaluation):
    trial, exported = sampled_export
    runtime = exported.recipe.runtime["kv_cache"]
    assert len(runtime["key_bits"]) == 5  # the checkpoint's blocks: the removed block's bits are dropped
    dense_bits = exported.recipe.sample["kv_cache"]["key_bits"]
    assert runtime["key_bits"] == [b for i, b in enumerate(dense_bits) if i not in exported.recipe.blocks["removed"]]
    model, new_cache = api.load_compressed(exported.directory)
    assert api.perplexity(model, evaluation) == pytest.approx(trial.values[0], rel=1e-4)
    cache = new_cache()
    prompt = evaluation[:1, :40]
    generated = model.generate(prompt, **{cache_keyword(model): cache}, max_new_tokens=8, do_sample=False)
    assert generated.shape == (1, 48) and torch.equal(generated[:, :40], prompt)
    assert [layer.spec.key_bits for layer in cache.layers] == runtime["key_bits"]
    assert [layer.spec.value_bits for layer in cache.layers] == runtime["value_bits"]
    quantized = [layer.key_stream.quantized for layer in cache.layers if layer.spec.key_bits < 16]
    assert quantized and all(tokens == 32 for tokens in quantized)  # 47 tokens cached, groups of 32, no residual


def test_the_recipe_rebuilds_the_same_weights_through_the_api(sampled_export):
    _, exported = sampled_export
    model, _ = api.reproduce(exported.directory / "recipe.yaml")
    state = model.state_dict()
    stored = load_file(exported.directory / "model.safetensors")
    assert stored.keys() <= state.keys()
    assert all(torch.equal(state[key], tensor) for key, tensor in stored.items())
    dense, _ = load_model(TINY, None, "float32")
    assert not torch.equal(stored["model.decoder.layers.0.fc1.weight"], dense.model.decoder.layers[0].fc1.weight)


def test_recipe_and_card_go_to_the_trials_run(sampled_export, study):
    trial, exported = sampled_export
    client = MlflowClient(study["stores"][1].partition("=")[2])
    run_id = trial.user_attrs["mlflow_run_id"]
    assert {a.path for a in client.list_artifacts(run_id, "export")} == {"export/recipe.yaml", "export/README.md"}
    assert client.get_run(run_id).data.metrics["export.perplexity"] == exported.recipe.perplexity["exported"]
    card = (exported.directory / "README.md").read_text()
    assert f"trial {trial.number}" in card and "| perplexity |" in card and "load_compressed" in card
    recipe = read_recipe(exported.directory)
    assert recipe.calibration["mode"] == "dense-once" and recipe.sample["prune"]["metric"] in ("magnitude", "wanda")
    assert recipe.versions["torch"] == torch.__version__


def test_sequential_by_default_and_perplexities_printed(study, tmp_path, monkeypatch, capsys):
    """pick=knee, rebuilt with sequential calibration; the recipe still rebuilds it exactly."""
    monkeypatch.chdir(tmp_path)
    assert main(["export", *study["where"], "pick=knee", "out=knee"]) == 0
    printed = capsys.readouterr().out
    recipe = read_recipe(tmp_path / "knee")
    assert recipe.calibration["mode"] == "sequential"
    trial = study["trials"][recipe.trial]
    exported = recipe.perplexity["exported"]
    assert f"perplexity: trial {trial.values[0]:.4f}, exported {exported:.4f}, sequential calibration" in printed
    model, _ = api.reproduce(tmp_path / "knee")
    stored = load_file(tmp_path / "knee" / "model.safetensors")
    assert all(torch.equal(model.state_dict()[key], tensor) for key, tensor in stored.items())


def test_picks_follow_the_optuna_records(study):
    records = read_study(study["storage"], "export")
    optuna_study = optuna.load_study(study_name="export", storage=study["storage"])
    front = {t.number: t.values for t in optuna_study.best_trials}
    complete = [t for t in optuna_study.get_trials() if t.state.name == "COMPLETE"]

    def picked(rule: str, where: str | None = None) -> int:
        return pick_trial(
            parse_pick(rule, where, records.objectives), records.complete(), records.objectives, records.directions
        )

    assert picked("best:perplexity") == min(complete, key=lambda t: t.values[0]).number
    assert picked("best:size_mb") == min(complete, key=lambda t: (t.values[1], t.values[0])).number
    lows = [min(v[i] for v in front.values()) for i in range(2)]
    spans = [max(v[i] for v in front.values()) - lows[i] for i in range(2)]
    closest = min(front, key=lambda n: math.hypot(*((front[n][i] - lows[i]) / (spans[i] or 1) for i in range(2))))
    assert picked("knee") == closest
    bound = sorted(t.values[1] for t in complete)[1]  # the two smallest models
    allowed = [t for t in complete if t.values[1] <= bound]
    assert picked("best:perplexity", f"size_mb<={bound}") == min(allowed, key=lambda t: t.values[0]).number


def test_a_pick_is_logged_before_the_model_loads(study, tmp_path):
    outcome = run_cli(["export", *study["where"], "pick=best:size_mb", "out=small"], tmp_path)
    assert outcome.code is None  # reached the model load
    complete = [t for t in study["trials"].values() if t.state.name == "COMPLETE"]
    smallest = min(complete, key=lambda t: (t.values[1], t.values[0]))
    assert f"trial {smallest.number} (picked by best:size_mb)" in outcome.stdout


def case(*args: str, says: str):
    return pytest.param(list(args), says, id=" ".join(args)[:50])


BAD = [
    case("trial=0", says="export needs out=DIR"),
    case("out=x", says="export needs trial=N or pick=knee|best:<objective>"),
    case("trial=0", "pick=knee", "out=x", says="trial=0 and pick=knee both choose the trial; give one of them"),
    case("trial=0", "trial=1", "out=x", says="trial= is given twice"),
    case("trial=abc", "out=x", says="trial=abc is not a trial number"),
    case("trial=99", "out=x", says="trial=99: study export has trials 0 to 4"),
    case("trial=4", "out=x", says="trial=4 of study export is fail, not complete; complete trials: 0, 1, 2, 3"),
    case("pick=median", "out=x", says="pick=median is not a rule; use pick=knee or best:<objective>"),
    case("pick=best:latency_ms", "out=x", says="pick=best:latency_ms names 'latency_ms', not an objective"),
    case("pick=knee", "pick.where=size_mb=3", "out=x", says="'size_mb=3' is not a bound"),
    case("pick=knee", "pick.where=memory_mb<=3", "out=x", says="names 'memory_mb', not an objective of the study"),
    case("pick=knee", "pick.where=size_mb<=0.1", "out=x", says="no complete trial is within size_mb<=0.1"),
    case("pick.where=size_mb<=3", "trial=0", "out=x", says="pick.where bounds what pick= chooses from"),
    case("trial=0", "out=../..", says="not a directory inside the current directory"),
    case("trial=0", "out=.", says="not a directory inside the current directory"),
    case("trial=0", "out=link/x", says="out=link/x is"),
    case("trial=0", "out=link", says="out=link is a symbolic link"),
    case("trial=0", "out=full", says="out=full exists and is not an empty directory"),
    case("trial=0", "out=x", "space.prune.sparsity=0.3", says="space.prune.sparsity cannot be changed"),
    case("trial=0", "out=x", "calibration.mode=lazy", says="unknown calibration.mode 'lazy'"),
]


@pytest.mark.parametrize(("args", "says"), BAD)
def test_bad_arguments_stop_before_compute_with_one_line(study, tmp_path, args, says):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "weights").write_text("")
    (tmp_path / "link").symlink_to(study["root"])  # a directory outside the current one
    outcome = run_cli(["export", *study["where"], *args], tmp_path)
    assert outcome.code == 2, (outcome.code, outcome.stderr)
    [line] = outcome.stderr.splitlines()
    assert line.startswith("autoprune: error: ") and says in line, line
    assert outcome.created == []


def test_an_unknown_study_or_store_is_refused(study, tmp_path):
    unknown = run_cli(["export", *study["stores"], "study.name=nope", "trial=0", "out=x"], tmp_path)
    assert unknown.code == 2 and "unknown study.name=nope" in unknown.stderr and "its studies: export" in unknown.stderr
    missing = run_cli(["export", "study.name=export", "study.storage=sqlite:///none.db", "trial=0", "out=x"], tmp_path)
    assert missing.code == 2 and "has no file, so no study" in missing.stderr
    assert missing.created == []
