"""Loading a causal LM and finding its decoder blocks and their linear sublayers generically."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from autoprune.errors import ConfigError, ModelLoadError

ASSETS = Path(__file__).parent / "assets"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def embedded_model_path(name: str) -> str:
    """Absolute path of a checkpoint shipped inside the package (the `tiny` model)."""
    return str(ASSETS / name)


def check_model_source(path: str | None, hub_id: str | None) -> None:
    """Validate where the model comes from, before any compute (the dtype is its field's rule)."""
    if path is not None:
        if not os.path.isdir(path):
            raise ConfigError(
                f"model.path {path!r} is not a directory; set model.path=<local dir> to a Hugging Face checkpoint"
            )
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ConfigError(f"model.path {path!r} has no config.json; it must hold a Hugging Face checkpoint")
    elif not hub_id:
        raise ConfigError("the model has neither model.path nor model.hub_id; set model.path=<local dir>")


_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len")


def checkpoint_config(path: str | None, hub_id: str | None) -> dict[str, Any]:
    """The checkpoint's config.json, read without loading the model: the local checkpoint's, or a
    hub model's in the local Hugging Face cache ({} for one that is not cached, which then needs a
    reachable hub: probed in seconds, so an offline machine is told before any file is written)."""
    config_file = Path(path, "config.json") if path is not None else _cached_hub_config(hub_id)
    if config_file is None and not hub_reachable():
        raise ConfigError(
            f"model.hub_id {hub_id!r} is not in the local Hugging Face cache and the hub is not reachable; "
            "download the checkpoint elsewhere and pass model.path=<local dir>"
        )
    return _checkpoint_settings(config_file) if config_file is not None else {}


def checkpoint_positions(settings: Mapping[str, Any]) -> int | None:
    """The model's maximum context from its config.json `settings` (None when it declares none)."""
    return next((settings[key] for key in _POSITION_KEYS if type(settings.get(key)) is int), None)


def check_context(settings: Mapping[str, Any], context: int | None, calib_windows: int, sequential: bool) -> int | None:
    """Check `model.context` against the model's positions and the calibration windows against
    memory, from the checkpoint's config.json `settings` alone (that is no model load).
    Returns the window length the study will use, None if unknown before the model loads.

    Memory: the calibration windows' token ids (8 bytes a token) and, in sequential calibration,
    every block's float32 inputs (4 x hidden size bytes a token) must fit in half the machine's RAM.
    """
    positions = checkpoint_positions(settings)
    if context is not None and positions is not None and context > positions:
        raise ConfigError(
            f"model.context is {context}, but the model has {positions} positions; "
            f"use model.context={positions} or less (null = {positions})"
        )
    length = context or positions
    hidden = settings.get("hidden_size")
    per_token = 8 + (4 * hidden if sequential and type(hidden) is int else 0)
    memory = _physical_memory()
    if length and memory and calib_windows * length * per_token > memory // 2:
        need = calib_windows * length * per_token / 2**30
        kept = (
            f", with every block's inputs kept for sequential calibration (hidden size {hidden})" if sequential else ""
        )
        raise ConfigError(
            f"data.calib_windows={calib_windows} windows of {length} tokens need about {need:.1f} GiB{kept}, "
            f"more than half of this machine's {memory / 2**30:.1f} GiB; lower data.calib_windows or model.context"
        )
    return length


def _cached_hub_config(hub_id: str | None) -> Path | None:
    """The config.json of a hub model already in the local Hugging Face cache (no network)."""
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(hub_id, "config.json")
    except ValueError:  # an id the hub client refuses; loading reports it
        return None
    return Path(cached) if isinstance(cached, str) else None


def _checkpoint_settings(config_file: Path) -> dict:
    """A checkpoint's config.json as a dict."""
    try:
        settings = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{config_file} cannot be read ({error}); point model.path at a checkpoint") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"{config_file} does not hold a mapping; point model.path at a checkpoint")
    return settings


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub, so an offline machine fails in seconds, not after retries."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _from_pretrained(source: str, dtype: str, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype], **kwargs)
    return model, tokenizer


def load_model(path: str | None, hub_id: str | None, dtype: str, device: str = "cpu"):
    """Load model and tokenizer from a local directory, else from the hub cache, else the hub."""
    if path is not None:
        try:
            model, tokenizer = _from_pretrained(path, dtype)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"could not load the checkpoint in {path!r}: {error}") from error
    else:
        try:
            model, tokenizer = _from_pretrained(hub_id, dtype, local_files_only=True)
        except (OSError, ValueError):
            if not hub_reachable():
                raise ModelLoadError(
                    f"could not fetch the weights of {hub_id!r}: the Hugging Face hub is not reachable and they are "
                    f"not in the local cache; download them elsewhere and pass model.path=<local dir>"
                ) from None
            try:
                model, tokenizer = _from_pretrained(hub_id, dtype)
            except (OSError, ValueError) as error:
                raise ModelLoadError(
                    f"could not fetch the weights of {hub_id!r} from the hub ({str(error).splitlines()[0][:160]}); "
                    f"pass model.path=<local dir> to a downloaded checkpoint"
                ) from error
    model.to(device).eval().requires_grad_(False)
    return model, tokenizer


@dataclass(frozen=True)
class AllocationUnit:
    """Linears that share one sparsity ratio: a decoder block, or a single linear sublayer.

    `slot` is the unit's place in the dense model's numbering (blocks, or linears in order), so
    per-layer search parameters keep their meaning when earlier compressors removed blocks.
    """

    slot: int
    label: str
    linears: dict[str, nn.Linear]

    @property
    def size(self) -> int:
        return sum(linear.weight.numel() for linear in self.linears.values())


GRANULARITIES = ("block", "linear")


@dataclass
class DecoderLayout:
    """The decoder blocks of a model and the linear sublayers of each, by qualified name.

    Names are those of the dense model: after blocks are removed (`without`) the survivors keep
    their names and slots, so statistics and per-layer parameters still find them.
    """

    blocks: list[nn.Module]
    prefix: str  # qualified name of the ModuleList holding the blocks
    linears: list[dict[str, nn.Linear]]
    slots: list[int] = field(default_factory=list)  # each block's index in the dense model

    def __post_init__(self) -> None:
        if not self.slots:
            self.slots = list(range(len(self.blocks)))

    @property
    def block_names(self) -> list[str]:
        return [f"{self.prefix}.{slot}" for slot in self.slots]

    def __len__(self) -> int:
        return len(self.blocks)

    def all_linears(self) -> dict[str, nn.Linear]:
        return {name: linear for block in self.linears for name, linear in block.items()}

    def block_sizes(self) -> list[int]:
        """Number of prunable weights per block (the weights of its linear sublayers)."""
        return [sum(linear.weight.numel() for linear in block.values()) for block in self.linears]

    def without(self, removed: set[int]) -> DecoderLayout:
        """The layout once the blocks at positions `removed` are gone (names and slots kept)."""
        keep = [index for index in range(len(self.blocks)) if index not in removed]
        return DecoderLayout(
            blocks=[self.blocks[i] for i in keep],
            prefix=self.prefix,
            linears=[self.linears[i] for i in keep],
            slots=[self.slots[i] for i in keep],
        )

    def units(self, granularity: str) -> list[AllocationUnit]:
        """Allocation units: one per block, or one per linear sublayer (numbered as in the dense model)."""
        if granularity == "block":
            return [
                AllocationUnit(slot, name, linears)
                for slot, name, linears in zip(self.slots, self.block_names, self.linears)
            ]
        if granularity == "linear":
            per_block = len(self.linears[0]) if self.linears else 0
            return [
                AllocationUnit(slot * per_block + position, name, {name: linear})
                for slot, linears in zip(self.slots, self.linears)
                for position, (name, linear) in enumerate(linears.items())
            ]
        raise ConfigError(f"unknown granularity {granularity!r}; use one of {', '.join(GRANULARITIES)}")


def decoder_layout(model: nn.Module) -> DecoderLayout:
    """Find the decoder blocks as the ModuleList with one entry per hidden layer.

    Works for OPT, Llama, Mistral, Qwen2 and other decoders that keep their blocks in one
    `nn.ModuleList`, without per-architecture attribute paths.
    """
    n_layers = getattr(model.config, "num_hidden_layers", None)
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (n_layers is None or len(module) == n_layers)
    ]
    if not candidates:
        raise ConfigError(
            f"cannot find the decoder blocks of {type(model).__name__}: no ModuleList of {n_layers} layers"
        )
    prefix, blocks = max(candidates, key=lambda item: sum(p.numel() for p in item[1].parameters()))
    linears = [
        {f"{prefix}.{index}.{name}": module for name, module in block.named_modules() if isinstance(module, nn.Linear)}
        for index, block in enumerate(blocks)
    ]
    if not any(linears):
        kinds = sorted({type(m).__name__ for m in blocks[0].modules() if not list(m.children())})
        raise ConfigError(
            f"the decoder blocks of {type(model).__name__} have no torch.nn.Linear sublayers "
            f"(they hold {', '.join(kinds)}); only models built from nn.Linear (OPT, Llama, Mistral, Qwen2, ...) "
            "can be pruned"
        )
    return DecoderLayout(blocks=list(blocks), prefix=prefix, linears=linears)


def model_context(model: nn.Module, configured: int | None) -> int:
    """The window length: the configured one, else the model's maximum position count."""
    if configured:
        return int(configured)
    for attribute in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(model.config, attribute, None)
        if value:
            return int(value)
    raise ConfigError("the model does not declare its context length; set model.context=<tokens>")
