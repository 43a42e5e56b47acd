"""Perplexity: exp of the mean next-token negative log-likelihood over the evaluation windows."""

import math

import torch
from torch.nn import functional

from autoprune.plugin import Scorer, StudyContext, hookimpl, progress

TOKENS_PER_BATCH = 4096


@torch.no_grad()
def perplexity(model: torch.nn.Module, windows: torch.Tensor) -> float:
    device = next(model.parameters()).device
    batch_size = max(1, TOKENS_PER_BATCH // windows.shape[1])
    nll, count = 0.0, 0
    for batch in progress(windows.split(batch_size), "perplexity", unit="batch"):
        batch = batch.to(device)
        logits = model(batch, use_cache=False).logits[:, :-1].float()
        targets = batch[:, 1:]
        nll += functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
        ).item()
        count += targets.numel()
    return math.exp(nll / count)


class Perplexity(Scorer):
    name = "perplexity"
    objectives = {"perplexity": "minimize"}

    def score(self, context: StudyContext) -> dict[str, float]:
        return {"perplexity": perplexity(context.model, context.evaluation)}


@hookimpl
def register_scorers() -> list[Scorer]:
    return [Perplexity()]
