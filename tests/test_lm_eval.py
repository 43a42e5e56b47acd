"""Zero-shot accuracy through the real lm-evaluation-harness: the project's own task, built from the
held-out docstrings, is deterministic and well formed; the embedded model scores well above chance
on it and a heavily pruned one lower; a study logs `accuracy` to maximise with each task beside it;
bad settings, unknown tasks and a missing extra are one line before compute; the local task neither
reaches the network nor prints anything."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets.config
import optuna
import pytest
from cli_harness import run_cli
from test_study import runs_of

from autoprune.config import compose_config
from autoprune.data import TextSource, evaluation_windows, read_text, tokenize
from autoprune.errors import ConfigError
from autoprune.study import run_study
from autoprune.trial import run_trial
from autoprune_plugins.scorers.lm_eval.continuation import (
    CHOICES,
    ENDING_WORDS,
    MAX_ITEMS,
    TASK,
    continuation_items,
    passages,
    write_task,
)
from autoprune_plugins.scorers.lm_eval.scorer import LmEval
from conftest import study_overrides

CHANCE = 1 / CHOICES
TASK_METRIC = f"acc.{TASK}"


@pytest.fixture(scope="module")
def held_out() -> str:
    return read_text(TextSource(split="eval"))


@pytest.fixture(scope="module")
def context(tiny_context, held_out):
    """The embedded model with the whole held-out split as its evaluation windows (400 items)."""
    windows = evaluation_windows(tokenize(tiny_context.tokenizer, held_out), 128, None)
    return dataclasses.replace(tiny_context, evaluation=windows, cache={})


def test_the_task_is_deterministic_and_well_formed(held_out, tmp_path):
    items = continuation_items(held_out)
    assert items == continuation_items(held_out) != continuation_items(held_out, seed=1)
    assert len(items) == MAX_ITEMS
    sentences = [sentence for _, sentence in passages(held_out)]
    endings = {" ".join(sentence.split()[-ENDING_WORDS:]) for sentence in sentences}
    for item in items:
        choices, answer = item["choices"], item["choices"][item["label"]]
        assert len(choices) == len(set(choices)) == CHOICES
        whole = f"{item['context']} {answer}"
        assert any(whole.endswith(sentence) for sentence in sentences), whole  # the true end, once
        assert set(choices) <= endings  # distractors end other sentences of the same text
    assert len({item["context"] for item in items}) == len(items)

    path = write_task(items, tmp_path)
    lines = (tmp_path / f"{TASK}.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == items
    assert json.loads(path.read_text())["dataset_kwargs"]["data_files"]["test"] == str(tmp_path / f"{TASK}.jsonl")


def test_too_little_text_makes_no_task():
    assert continuation_items("Only one sentence of prose is here and it ends well.") == []


def test_the_dense_model_is_well_above_chance_and_a_heavily_pruned_one_lower(context):
    scorer = LmEval().bind({"limit": MAX_ITEMS})
    dense = scorer.score(context)
    assert dense["accuracy"] == dense[TASK_METRIC] >= CHANCE + 0.12  # 400 items: chance +- 0.02
    prune = context.registry.compressor("prune")
    pruned = run_trial(context, [prune], [scorer], {"prune": {"metric": "magnitude", "sparsity": 0.95}})
    assert pruned.values["accuracy"] <= dense["accuracy"] - 0.05


def test_the_local_task_reaches_no_network_and_prints_nothing(context, monkeypatch, capfd):
    reached = []

    def refuse(*args, **kwargs):
        reached.append(args[:2])
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    small = dataclasses.replace(context, cache={})
    values = LmEval().bind({"limit": 20}).score(small)
    assert 0 <= values["accuracy"] <= 1 and reached == []
    out, err = capfd.readouterr()
    assert out == err == ""


def test_a_study_logs_accuracy_to_maximise_and_each_task(tmp_path, monkeypatch):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    overrides = [*study_overrides(tmp_path, name="accuracy", trials=2), "scorers=[perplexity,lm_eval]"]
    run_study(compose_config([*overrides, "baselines.allocations=[]", "+scoring.lm_eval.limit=20"]))

    study = optuna.load_study(study_name="accuracy", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE, optuna.study.StudyDirection.MAXIMIZE]
    _, [parent], children = runs_of(tmp_path, "accuracy")
    assert 0 < parent.data.metrics["dense.accuracy"] == parent.data.metrics[f"dense.{TASK_METRIC}"] <= 1
    assert len(children) == 2
    for child in children:
        metrics = child.data.metrics
        assert 0 <= metrics["accuracy"] == metrics[f"lm_eval.{TASK_METRIC}"] <= 1
    assert list(workdir.iterdir()) == []  # the task's files went to a temporary directory


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+scoring.lm_eval.limit=0", "scoring.lm_eval: limit is 0; use a whole number from 1 to"),
        ("+scoring.lm_eval.batch_size=two", "scoring.lm_eval: batch_size is 'two'; use a whole number from 1 to"),
        (
            "+scoring.lm_eval.tasks=[]",
            f"scoring.lm_eval: tasks is []; list one or more lm-eval task names, e.g. [{TASK}]",
        ),
        (f"+scoring.lm_eval.tasks=[{TASK},{TASK}]", "which names a task twice; list each task once"),
        ("+scoring.lm_eval.limt=5", "unknown key 'limt'; did you mean limit? the lm_eval scorer takes: batch_size"),
    ],
)
def test_bad_settings_are_one_line_before_compute(tmp_path, override, message):
    outcome = run_cli(["scorers=[perplexity,lm_eval]", override], tmp_path)
    assert outcome.code == 2 and outcome.created == []
    [line] = outcome.stderr.splitlines()
    assert message in line


def test_tasks_the_harness_cannot_score_are_one_line_before_compute(tmp_path):
    """The harness's own index (built once per process) tells unknown names, tags and tasks without
    an accuracy apart, before the model loads."""
    expected = {
        "hellaswg": "lm-eval has no task 'hellaswg'; did you mean hellaswag? list them with `lm-eval ls tasks`",
        "ai2_arc": "'ai2_arc' is a tag of lm-eval tasks, which has no accuracy of its own; name its tasks instead",
        "gsm8k": "lm-eval task 'gsm8k' reports no accuracy (acc); choose a multiple-choice task such as arc_easy",
    }
    for task, message in expected.items():
        outcome = run_cli(["scorers=[lm_eval]", f"+scoring.lm_eval.tasks=[{TASK},{task}]"], tmp_path)
        assert outcome.code == 2 and outcome.created == []
        [line] = outcome.stderr.splitlines()
        assert f"scoring.lm_eval.tasks: {message}" in line
    assert run_cli(["scorers=[lm_eval]", "+scoring.lm_eval.tasks=[arc_easy]"], tmp_path, True).code is None


def test_a_hub_task_out_of_reach_is_one_line_naming_the_local_task(context, monkeypatch, tmp_path):
    """As where no hub can be reached: the `datasets` library offline, with an empty cache."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    scorer = LmEval().bind({"tasks": [TASK, "arc_easy"], "limit": 5})
    with pytest.raises(ConfigError) as raised:
        scorer.score(dataclasses.replace(context, cache={}))
    [line] = str(raised.value).splitlines()
    assert line.startswith("scoring.lm_eval.tasks: could not load the data of arc_easy (ConnectionError")
    assert line.endswith(f"without a hub, evaluate on the project's own task (scoring.lm_eval.tasks=[{TASK}])")


def test_without_the_extra_the_plugin_loads_and_selecting_it_fails_before_compute(tmp_path):
    """A Python in which lm_eval cannot be imported, as where autoprune[eval] is not installed."""
    program = "import sys; sys.modules['lm_eval'] = None; from autoprune.cli import main; sys.exit(main())"
    overrides = ["scorers=[perplexity,lm_eval]", f"study.storage=sqlite:///{tmp_path}/optuna.db"]
    environment = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", program, *overrides], cwd=tmp_path, env=environment, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert "scoring.lm_eval needs lm-evaluation-harness" in line and "install autoprune[eval]" in line
    assert list(Path(tmp_path).iterdir()) == []
