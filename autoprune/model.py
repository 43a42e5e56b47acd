"""Loading a causal LM and finding its decoder blocks and their linear sublayers generically."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from autoprune.errors import ConfigError, ModelLoadError

ASSETS = Path(__file__).parent / "assets"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def embedded_model_path(name: str) -> str:
    """Absolute path of a checkpoint shipped inside the package (the `tiny` model)."""
    return str(ASSETS / name)


def check_model_source(path: str | None, hub_id: str | None, dtype: str) -> None:
    """Validate the model config before any compute."""
    if dtype not in DTYPES:
        raise ConfigError(f"unknown model.dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if path is not None:
        if not Path(path).is_dir():
            raise ConfigError(
                f"model.path {path!r} is not a directory; set model.path=<local dir> to a Hugging Face checkpoint"
            )
        if not (Path(path) / "config.json").is_file():
            raise ConfigError(f"model.path {path!r} has no config.json; it must hold a Hugging Face checkpoint")
    elif not hub_id:
        raise ConfigError("the model has neither model.path nor model.hub_id; set model.path=<local dir>")


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
