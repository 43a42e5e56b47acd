"""Layer removal: drop the k decoder blocks that change the hidden state least (ShortGPT), and
optionally compensate the magnitude gap they leave (Prune&Comp).

Block influence. With h_l a block's input and h_{l+1} its output on the calibration windows,
BI_l = 1 − mean over tokens of cos(h_l, h_{l+1}); the k blocks of lowest BI are removed from the
model's ModuleList, so the model really runs fewer layers and the size and latency scorers see
them gone. Influence is measured once per study, on the dense model.

Compensation. Without block l, block l+1 receives h_l where the dense model gave it h_{l+1},
larger on average by the factor g_l = mean‖h_{l+1}‖ / mean‖h_l‖. Multiplying the residual
stream by g_l at that point would close the gap. In a pre-norm decoder every later block and
the final norm read the stream through a normalisation that ignores its scale, so the same
effect is had offline, with no runtime cost, by dividing by g_l what the later blocks write into
the stream: the weights and biases of their residual-writing linears (out_proj / o_proj,
fc2 / down_proj), found generically as the linears whose outputs sum to what the block adds
to the stream. With several blocks removed, the gaps (measured on the dense model) multiply.
Post-norm decoders have neither this invariance nor such writers, and compensation refuses them.

Blocks are ranked, and their gaps measured, once in `prepare`, on the dense model, so the
compressor may come before or after prune in the space. Space parameters: `count` (k,
default 1), `compensate` (default true).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import torch
from torch import Tensor, nn

from autoprune.plugin import (
    BlockInputs,
    Compressor,
    ConfigError,
    DecoderLayout,
    Journal,
    Registry,
    StudyContext,
    hookimpl,
    possible_values,
    progress,
)

PROFILE = "remove_layers.profile"  # context.cache key of the study's BlockProfile


@dataclass(frozen=True)
class BlockProfile:
    """What the dense model says about its blocks, measured once per study."""

    influence: list[float]  # BI per block, by slot
    gap: list[float]  # mean‖output‖ / mean‖input‖ per block, by slot
    writers: list[str]  # names, relative to a block, of the linears that write the residual stream


def _hidden(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def _float32(value: Any) -> Any:
    """Floating tensors, also inside tuples, lists and dicts, in float32; anything else as it is."""
    if isinstance(value, Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_float32(item) for item in value)
    if isinstance(value, dict):
        return {key: _float32(item) for key, item in value.items()}
    return value


@torch.no_grad()
def residual_writers(layout: DecoderLayout, call: tuple[Tensor, tuple, dict]) -> list[str]:
    """The linears of block 0 whose outputs are what the block adds to the residual stream.

    In a pre-norm block, output − input is exactly the sum of the residual writers' outputs
    (attention out_proj plus MLP fc2, say). Among the linears whose output has the stream's
    width, the subset whose outputs sum to that difference is the writers; the same relative
    names hold in every block. A post-norm block has no such subset: the result is empty.
    The test runs on a float32 copy of block 0, so half-precision rounding cannot hide the sum.
    """
    block = copy.deepcopy(layout.blocks[0]).float()
    hidden, args, kwargs = _float32(call)
    candidates = {
        name: module
        for name, module in block.named_modules()
        if isinstance(module, nn.Linear) and module.out_features == hidden.shape[-1]
    }
    outputs: dict[str, Tensor] = {}
    handles = [
        linear.register_forward_hook(lambda module, inputs, output, name=name: outputs.__setitem__(name, output))
        for name, linear in candidates.items()
    ]
    try:
        update = _hidden(block(hidden, *args, **kwargs)) - hidden
    finally:
        for handle in handles:
            handle.remove()
    tolerance = 1e-4 * float(update.abs().max())
    for size in range(1, len(candidates) + 1):
        for subset in combinations(candidates, size):
            if torch.allclose(sum(outputs[name] for name in subset), update, rtol=1e-3, atol=tolerance):
                return list(subset)
    return []


@torch.no_grad()
def profile_blocks(context: StudyContext) -> BlockProfile:
    """Block influence and magnitude gap of every block on the calibration windows, one dense pass."""
    layout = context.layout
    cosines = [0.0] * len(layout)
    norms_in, norms_out = [0.0] * len(layout), [0.0] * len(layout)
    tokens = [0] * len(layout)

    def measure(index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            before = (args[0] if args else kwargs["hidden_states"]).float()
            after = _hidden(output).float()
            cosines[index] += float(nn.functional.cosine_similarity(before, after, dim=-1).sum())
            norms_in[index] += float(before.norm(dim=-1).sum())
            norms_out[index] += float(after.norm(dim=-1).sum())
            tokens[index] += before.shape[:-1].numel()

        return hook

    handles = [block.register_forward_hook(measure(i), with_kwargs=True) for i, block in enumerate(layout.blocks)]
    device = next(context.model.parameters()).device
    try:
        batches = context.calibration.split(context.calibration_batch_size)
        for batch in progress(batches, "block influence", unit="batch"):
            context.model(batch.to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    call = BlockInputs(context.model, layout, context.calibration[:1]).calls[0]
    return BlockProfile(
        influence=[1 - c / n for c, n in zip(cosines, tokens)],
        gap=[o / i for o, i in zip(norms_out, norms_in)],
        writers=residual_writers(layout, call),
    )


def _check_count(space: Mapping[str, Any], blocks: int) -> None:
    """At least one block must survive every count the space can sample."""
    most = max(possible_values(space.get("count", 1)))
    if most >= blocks:
        raise ConfigError(
            f"space.remove_layers.count goes up to {most}, but the model has only {blocks} blocks; "
            f"keep it below {blocks}"
        )


class RemoveLayers(Compressor):
    name = "remove_layers"
    params = ("count", "compensate")

    def check(self, space: Mapping[str, Any], registry: Registry) -> None:
        count = space.get("count", 1)
        if not all(type(c) is int and c >= 0 for c in possible_values(count)):
            raise ConfigError(f"space.remove_layers.count takes whole numbers of blocks >= 0, got {count!r}")
        compensate = space.get("compensate", True)
        if not all(isinstance(option, bool) for option in possible_values(compensate)):
            raise ConfigError(f"space.remove_layers.compensate must be true or false, got {compensate!r}")

    def check_model(self, space: Mapping[str, Any], model_config: Mapping[str, Any]) -> None:
        blocks = model_config.get("num_hidden_layers")
        if type(blocks) is int:
            _check_count(space, blocks)

    def prepare(self, context: StudyContext, space: Mapping[str, Any]) -> None:
        _check_count(space, len(context.layout))
        if PROFILE not in context.cache:
            context.cache[PROFILE] = profile_blocks(context)

    def apply(self, context: StudyContext, params: Mapping[str, Any], journal: Journal) -> dict[str, Any]:
        layout = context.layout
        count, compensate = int(params.get("count", 1)), bool(params.get("compensate", True))
        profile: BlockProfile = context.cache[PROFILE]  # measured on the dense model by `prepare`
        removed = set(sorted(range(len(layout)), key=lambda i: profile.influence[layout.slots[i]])[:count])
        if compensate and removed:
            if not profile.writers:
                raise ConfigError(
                    "remove_layers.compensate needs a pre-norm decoder (no linears write the residual stream "
                    "directly here); set space.remove_layers.compensate=false"
                )
            self._compensate(layout, removed, profile, journal)
        self._remove(context, removed, journal)
        removed_slots = {layout.slots[i] for i in removed}
        return {
            "block": layout.block_names,
            "influence": [profile.influence[slot] for slot in layout.slots],
            "removed": [int(slot in removed_slots) for slot in layout.slots],
        }

    @staticmethod
    def _compensate(layout: DecoderLayout, removed: set[int], profile: BlockProfile, journal: Journal) -> None:
        scale = 1.0
        for index, block in enumerate(layout.blocks):
            if index in removed:
                scale /= profile.gap[layout.slots[index]]
                continue
            if scale == 1.0:
                continue
            for writer in profile.writers:
                linear = block.get_submodule(writer)
                journal.overwrite(linear.weight, linear.weight * scale)
                if linear.bias is not None:
                    journal.overwrite(linear.bias, linear.bias * scale)

    @staticmethod
    def _remove(context: StudyContext, removed: set[int], journal: Journal) -> None:
        layout = context.layout
        parent_name, _, attribute = layout.prefix.rpartition(".")
        parent = context.model.get_submodule(parent_name)
        dense_blocks = getattr(parent, attribute)
        kept = nn.ModuleList(block for index, block in enumerate(dense_blocks) if index not in removed)
        setattr(parent, attribute, kept)
        context.layout = layout.without(removed)
        journal.on_undo(lambda: setattr(parent, attribute, dense_blocks))
        journal.on_undo(lambda: setattr(context, "layout", layout))


@hookimpl
def register_compressors() -> list[Compressor]:
    return [RemoveLayers()]
