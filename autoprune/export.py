"""`autoprune export`: any completed trial of a study as a checkpoint plain transformers loads.

    autoprune export study.name=NAME trial=N out=DIR [calibration.mode=dense-once] [KEY=VALUE ...]
    autoprune export study.name=NAME pick=knee out=DIR
    autoprune export study.name=NAME pick=best:perplexity pick.where='memory_mb<=12' out=DIR

`trial=`, `pick=`, `pick.where=` (see `autoprune.pick`) and `out=` are the command's own, the
rest Hydra overrides of where the study is and how to rebuild it (`autoprune.export_args`). The
trial is rebuilt, never restored: the study's resolved config (its MLflow parent run's config.yaml,
what the study ran with) becomes a plan with those overrides on top, the study's builder loads the
model and data and prepares the compressors, and the trial's sample, replayed from Optuna's
record, compresses the model with the trial's own compress step. Calibration is `sequential`
unless `calibration.mode=dense-once` is given, which reproduces the trial exactly.

`out` (inside the current directory, absent or empty) gets the checkpoint (`autoprune.checkpoint`),
recipe.yaml (`autoprune.recipe`) and README.md (`autoprune.card`), written to a hidden sibling and
moved into place last, so a failed export leaves nothing that looks like a checkpoint. The
checkpoint is then loaded back to measure its perplexity, printed next to the trial's, and recipe
and card are logged to the trial's MLflow run under `export/`. Every mistake in the arguments is
one line, exit code 2, before any model loads.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from autoprune.builder import apply_sample, build_context
from autoprune.card import model_card
from autoprune.checkpoint import apply_runtime, checkpoint_runtime, load_checkpoint, save_checkpoint
from autoprune.config import AutopruneConfig
from autoprune.context import StudyContext
from autoprune.errors import ConfigError
from autoprune.export_args import ExportRequest, export_directory, given_overrides, parse_request
from autoprune.model import decoder_layout
from autoprune.pick import parse_pick, pick_trial
from autoprune.plan import Plan, prepare
from autoprune.progress import set_progress
from autoprune.recipe import FILE_NAME, Recipe, library_versions, windows_hash
from autoprune.records import StudyRecords, TrialRecord, read_study, study_config, trial_sample
from autoprune.trial import measure

log = logging.getLogger("autoprune")
DEFAULT_MODE = "sequential"
CARD = "README.md"
ARTIFACT_DIR = "export"  # where recipe and card go on the trial's MLflow run


@dataclass(frozen=True)
class Exported:
    directory: Path
    recipe: Recipe


def _choose(request: ExportRequest, records: StudyRecords) -> tuple[TrialRecord, str]:
    """The trial, and how a rule chose it ("" when it is named)."""
    if request.trial is None:
        rule = parse_pick(request.pick or "", request.where, records.objectives)
        feasible = records.complete(feasible_only=True)
        if records.complete() and not feasible:
            raise ConfigError(
                f"pick={rule}: none of the {len(records.complete())} completed trials of study {records.name} is "
                "within its constraints; export one by number with trial=N"
            )
        number = pick_trial(rule, feasible, records.objectives, records.directions)
        return records.trials[number], f" (picked by {rule})"
    record = records.trials.get(request.trial)
    if record is None:
        last = max(records.trials, default=-1)
        raise ConfigError(f"trial={request.trial}: study {records.name} has trials 0 to {last}; choose one of them")
    if record.state != "COMPLETE":
        complete = ", ".join(map(str, records.complete())) or "none yet"
        raise ConfigError(
            f"trial={request.trial} of study {records.name} is {record.state.lower()}, not complete; "
            f"complete trials: {complete}"
        )
    return record, ""


def _plan(stored: dict[str, Any], composed: DictConfig, keys: list[str]) -> Plan:
    """The study's config with the command line's overrides, where the study was found, and the
    export's calibration mode on top, checked as a study's is."""
    try:
        config = OmegaConf.merge(OmegaConf.structured(AutopruneConfig), stored)
    except Exception as error:  # OmegaConf raises several types for a config that does not fit the schema
        raise ConfigError(f"the study's config.yaml does not fit this version of autoprune: {error}") from None
    for key in {*keys, "study.storage", "mlflow.tracking_uri", "mlflow.experiment"}:
        OmegaConf.update(config, key, OmegaConf.select(composed, key), merge=False)
    if not any(key == "calibration" or key == "calibration.mode" for key in keys):
        config.calibration.mode = DEFAULT_MODE
    return prepare(config)  # type: ignore[arg-type]


@dataclass
class _Built:
    """What the rebuilt model left behind once its checkpoint is saved (the model itself is dropped)."""

    info: dict[str, Any]
    kept: list[int]
    dense_blocks: int
    runtime: dict[str, dict[str, Any]]
    calibration: Tensor
    evaluation: Tensor


def _rebuild_and_save(plan: Plan, record: TrialRecord, sample: dict[str, dict[str, Any]], staging: Path) -> _Built:
    baselines = record.as_baseline()
    context = build_context(plan, defaultdict(list), baselines)
    dense_blocks = len(context.layout)
    info = apply_sample(plan, context, sample, baselines)
    kept = list(context.layout.slots)
    save_checkpoint(context.model, context.tokenizer, kept, dense_blocks, staging)
    runtime = checkpoint_runtime(context.runtime.settings, kept, dense_blocks)
    return _Built(info, kept, dense_blocks, runtime, context.calibration, context.evaluation)


def _exported_perplexity(plan: Plan, directory: Path, runtime: dict[str, Any], evaluation: Tensor) -> float:
    """The saved checkpoint's perplexity, loaded back as `load_compressed` loads it."""
    model = load_checkpoint(directory, plan.config.model.dtype, plan.config.model.device)
    apply_runtime(model, runtime, plan.registry)
    scorer = plan.registry.scorer("perplexity").bind(plan.config.scoring.get("perplexity") or {})
    context = StudyContext(model, None, decoder_layout(model), evaluation[:0], evaluation, {}, plan.registry)
    return measure(context, [scorer])[0]["perplexity"]


def _recipe(
    plan: Plan, record: TrialRecord, sample: dict[str, dict[str, Any]], built: _Built, perplexity: dict[str, float]
) -> Recipe:
    settings = plan.config.calibration
    removed = [slot for slot in range(built.dense_blocks) if slot not in built.kept]
    baseline = {"name": record.baseline["name"], "overrides": record.baseline["overrides"]} if record.baseline else None
    return Recipe(
        study=plan.study_name,
        trial=record.number,
        baseline=baseline,
        objectives=record.values,
        perplexity=perplexity,
        sample=sample,
        reported=built.info,
        blocks={"dense": built.dense_blocks, "removed": removed},
        runtime=built.runtime,
        calibration={
            "mode": settings.mode,
            "windows": built.calibration.shape[0],
            "tokens": built.calibration.shape[1],
            "batch_size": settings.batch_size,
            "data_hash": windows_hash(built.calibration),
        },
        evaluation={
            "windows": built.evaluation.shape[0],
            "tokens": built.evaluation.shape[1],
            "data_hash": windows_hash(built.evaluation),
        },
        versions=library_versions(),
        config=OmegaConf.to_container(plan.resolved, resolve=True),  # type: ignore[arg-type]
    )


def _log_to_run(tracking_uri: str, record: TrialRecord, directory: Path, exported: float) -> None:
    """Recipe and card on the trial's MLflow run; a run that is gone is only warned about."""
    if not record.run_id:
        log.warning(f"trial {record.number} has no MLflow run; recipe and card are only in {directory}")
        return
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        for name in (FILE_NAME, CARD):
            client.log_artifact(record.run_id, str(directory / name), ARTIFACT_DIR)
        client.set_tag(record.run_id, "autoprune.export", str(directory))
        client.log_metric(record.run_id, "export.perplexity", exported)
    except MlflowException as error:
        log.warning(
            f"mlflow: trial {record.number}'s run {record.run_id} was not updated ({str(error).splitlines()[0]})"
        )


def _write(plan: Plan, record: TrialRecord, sample: dict[str, dict[str, Any]], out: str, directory: Path) -> Recipe:
    """Rebuild the trial and write checkpoint, recipe and card to a hidden sibling of `directory`,
    moved into place once all is written; returns the recipe."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.parent / f".{directory.name}.export-{os.getpid()}"
    try:
        built = _rebuild_and_save(plan, record, sample, staging)
        gc.collect()  # run-time state's closures tie the compressed model in cycles: free it before the reload
        perplexity = {"exported": _exported_perplexity(plan, staging, built.runtime, built.evaluation)}
        if "perplexity" in record.values:
            perplexity = {"trial": record.values["perplexity"], **perplexity}
        recipe = _recipe(plan, record, sample, built, perplexity)
        (staging / FILE_NAME).write_text(recipe.to_yaml(), encoding="utf-8")
        (staging / CARD).write_text(model_card(recipe, out), encoding="utf-8")
        if directory.exists():
            directory.rmdir()  # empty: checked before
        staging.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return recipe


def run_export(args: list[str]) -> Exported:
    """Check every argument, rebuild the chosen trial, write and verify its checkpoint, record it."""
    request = parse_request(args)
    directory = export_directory(request.out, Path.cwd())
    composed, keys = given_overrides(request.overrides)
    records = read_study(composed.study.storage, composed.study.name)
    record, how = _choose(request, records)
    stored = study_config(composed.mlflow.tracking_uri, composed.mlflow.experiment, records.name)
    plan = _plan(stored, composed, keys)
    sample = trial_sample(plan.space, record)
    set_progress(plan.config.progress)
    mode = plan.config.calibration.mode
    values = " ".join(f"{name}={value:.4g}" for name, value in record.values.items())
    log.info(f"export: study {records.name}, trial {record.number}{how}: {values}; {mode} calibration")

    recipe = _write(plan, record, sample, request.out, directory)
    perplexity = recipe.perplexity
    _log_to_run(plan.config.mlflow.tracking_uri, record, directory, perplexity["exported"])
    trial_side = f"trial {perplexity['trial']:.4f}, " if "trial" in perplexity else ""
    exact = " (reproduces the trial)" if mode == "dense-once" else ""
    log.info(f"perplexity: {trial_side}exported {perplexity['exported']:.4f}, {mode} calibration{exact}")
    kept = recipe.blocks["dense"] - len(recipe.blocks["removed"])
    log.info(
        f"exported trial {record.number} to {directory}: {kept} of {recipe.blocks['dense']} decoder blocks, "
        f"{FILE_NAME}, {CARD}; load it with AutoModelForCausalLM.from_pretrained or autoprune.api.load_compressed"
    )
    return Exported(directory, recipe)
