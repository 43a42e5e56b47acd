"""Perplexity: exp of the mean next-token negative log-likelihood over the evaluation windows.

For multi-fidelity search it measures in stages (`score_in_stages`), each comparable across the
trials of a study: first the KL divergence of the model's next-token distributions from the dense
model's on a few calibration tokens (the dense log-probabilities are computed once per study, in
`prepare`), then the perplexity of the first quarter and the first half of the evaluation windows,
then all of them. The stages reuse each other's work: a trial that goes through every stage costs
the KL stage more than `score`, and its perplexity is the same number.
"""

import math
from collections.abc import Iterator

import torch
from torch.nn import functional

from autoprune.plugin import Scorer, StudyContext, hookimpl, progress

TOKENS_PER_BATCH = 4096
KL_TOKENS = 512  # calibration tokens the KL stage compares (dense log-probs kept: KL_TOKENS x vocabulary)
SHARES = (0.25, 0.5)  # of the evaluation windows, before the full stage
DENSE_LOGPROBS = "perplexity.dense_logprobs"  # context.cache key


def _chunks(windows: torch.Tensor) -> list[torch.Tensor]:
    """The windows cut at each share of SHARES (the stages' boundaries), in order."""
    cuts = sorted({0, *(round(share * len(windows)) for share in SHARES), len(windows)})
    return [windows[start:end] for start, end in zip(cuts, cuts[1:]) if end > start]


def _batches(windows: torch.Tensor) -> list[torch.Tensor]:
    """The batches every perplexity here is summed over, never across a stage's boundary, so the
    staged and the one-pass perplexity are the same number."""
    size = max(1, TOKENS_PER_BATCH // windows.shape[1])
    return [batch for chunk in _chunks(windows) for batch in chunk.split(size)]


def _batch_nll(model: torch.nn.Module, batch: torch.Tensor) -> tuple[float, int]:
    batch = batch.to(next(model.parameters()).device)
    logits = model(batch, use_cache=False).logits[:, :-1].float()
    targets = batch[:, 1:]
    nll = functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
    return nll.item(), targets.numel()


@torch.no_grad()
def perplexity(model: torch.nn.Module, windows: torch.Tensor) -> float:
    nll, count = 0.0, 0
    for batch in progress(_batches(windows), "perplexity", unit="batch"):
        batch_nll, batch_count = _batch_nll(model, batch)
        nll, count = nll + batch_nll, count + batch_count
    return math.exp(nll / count)


def _kl_windows(context: StudyContext) -> torch.Tensor:
    """The first calibration windows, cut to at most KL_TOKENS tokens in all."""
    windows = context.calibration
    rows = max(1, min(len(windows), KL_TOKENS // windows.shape[1]))
    return windows[:rows, : KL_TOKENS // rows]


def _logprobs(model: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
    logits = model(windows.to(next(model.parameters()).device), use_cache=False).logits.float()
    return functional.log_softmax(logits, dim=-1)


class Perplexity(Scorer):
    name = "perplexity"
    objectives = {"perplexity": "minimize"}

    def prepare(self, context: StudyContext) -> dict[str, float]:
        if len(context.calibration):
            with torch.no_grad():
                context.cache[DENSE_LOGPROBS] = _logprobs(context.model, _kl_windows(context))
        return {}

    def score(self, context: StudyContext) -> dict[str, float]:
        return {"perplexity": perplexity(context.model, context.evaluation)}

    @torch.no_grad()
    def score_in_stages(self, context: StudyContext) -> Iterator[tuple[str, dict[str, float]]]:
        dense = context.cache.get(DENSE_LOGPROBS)
        if dense is not None:
            compressed = _logprobs(context.model, _kl_windows(context))
            kl = functional.kl_div(compressed, dense, log_target=True, reduction="sum").item() / dense[..., 0].numel()
            yield "kl", {"perplexity": kl}
        nll, count, seen, windows = 0.0, 0, 0, len(context.evaluation)
        ends = _chunk_ends(context.evaluation)
        for batch in progress(_batches(context.evaluation), "perplexity", unit="batch"):
            batch_nll, batch_count = _batch_nll(context.model, batch)
            nll, count, seen = nll + batch_nll, count + batch_count, seen + len(batch)
            if seen in ends and seen < windows:
                yield f"ppl@{seen}/{windows}", {"perplexity": math.exp(nll / count)}
        yield "full", {"perplexity": math.exp(nll / count)}


def _chunk_ends(windows: torch.Tensor) -> set[int]:
    """How many windows have been seen at the end of each chunk."""
    ends, seen = set(), 0
    for chunk in _chunks(windows):
        seen += len(chunk)
        ends.add(seen)
    return ends


@hookimpl
def register_scorers() -> list[Scorer]:
    return [Perplexity()]
