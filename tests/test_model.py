"""Decoder blocks and their linears are found generically, for OPT and Llama-style models."""

import pytest
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

from autoprune.config import ModelConfig
from autoprune.errors import ConfigError
from autoprune.model import check_model_source, decoder_layout, model_context
from autoprune.validation import check_fields


def test_opt_layout():
    model = OPTForCausalLM(
        OPTConfig(
            vocab_size=64,
            hidden_size=32,
            num_hidden_layers=3,
            ffn_dim=64,
            num_attention_heads=2,
            word_embed_proj_dim=32,
        )
    )
    layout = decoder_layout(model)
    assert layout.block_names == ["model.decoder.layers.0", "model.decoder.layers.1", "model.decoder.layers.2"]
    assert [name.rsplit(".", 1)[-1] for name in layout.linears[0]] == [
        "k_proj",
        "v_proj",
        "q_proj",
        "out_proj",
        "fc1",
        "fc2",
    ]
    assert layout.block_sizes() == [4 * 32 * 32 + 2 * 32 * 64] * 3
    assert model_context(model, None) == model.config.max_position_embeddings


def test_llama_layout():
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    layout = decoder_layout(LlamaForCausalLM(config))
    assert layout.block_names == ["model.layers.0", "model.layers.1"]
    assert sorted(name.rsplit(".", 1)[-1] for name in layout.linears[1]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


def test_model_source_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="set model.path=<local dir>"):
        check_model_source(str(tmp_path / "missing"), None)
    with pytest.raises(ConfigError, match="has no config.json"):
        check_model_source(str(tmp_path), None)
    with pytest.raises(ConfigError, match="unknown model.dtype 'float8'"):
        check_fields(ModelConfig(hub_id="facebook/opt-125m", dtype="float8"), key="model")


def test_blocks_without_linear_layers_are_refused_up_front():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=16))
    with pytest.raises(ConfigError, match="no torch.nn.Linear sublayers .*Conv1D"):
        decoder_layout(model)
