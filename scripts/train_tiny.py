"""Train the embedded default model: a small OPT causal LM on standard-library docstrings.

    python scripts/train_tiny.py --out autoprune/assets/tiny-opt

Needs no network: the text is harvested from the installed Python standard library
(see autoprune/corpus.py). Writes a normal Hugging Face checkpoint (config.json,
model.safetensors in float16, tokenizer files) plus training.json with the figures the
docs quote: the model's test perplexity and a unigram model's on the same tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections import Counter
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

from autoprune.corpus import corpus_text
from autoprune.data import evaluation_windows, tokenize
from autoprune_plugins.scorers.perplexity import perplexity

PAD, EOS = "<pad>", "</s>"


def train_tokenizer(text: str, vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(text.split("\n\n"), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, bos_token=EOS)


def unigram_perplexity(train_ids: torch.Tensor, test_ids: torch.Tensor, vocab_size: int) -> float:
    """Perplexity of an add-one-smoothed unigram model fitted on the training tokens."""
    counts = Counter(train_ids.tolist())
    total = len(train_ids) + vocab_size
    nll = -sum(math.log((counts[t] + 1) / total) for t in test_ids.tolist()) / len(test_ids)
    return math.exp(nll)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("autoprune/assets/tiny-opt"))
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    started = time.time()
    train_text = corpus_text("train")
    tokenizer = train_tokenizer(train_text, args.vocab)
    train_ids, test_ids = tokenize(tokenizer, train_text), tokenize(tokenizer, corpus_text("eval"))
    print(f"corpus: {len(train_ids)} train tokens, {len(test_ids)} test tokens", flush=True)

    config = OPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        ffn_dim=4 * args.hidden,
        num_attention_heads=args.heads,
        max_position_embeddings=args.context,
        word_embed_proj_dim=args.hidden,
        dropout=0.0,
        attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = OPTForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
        ),
    )
    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    for step in range(args.steps):
        starts = torch.randint(0, len(train_ids) - args.context - 1, (args.batch,), generator=generator)
        batch = torch.stack([train_ids[s : s + args.context] for s in starts.tolist()])
        loss = model(batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - started:6.0f}s", flush=True)

    model.eval()
    model = model.half().float()  # measure exactly what the float16 checkpoint holds
    figures = {
        "test_perplexity": round(perplexity(model, evaluation_windows(test_ids, args.context, None)), 2),
        "unigram_test_perplexity": round(unigram_perplexity(train_ids, test_ids, len(tokenizer)), 2),
        "train_tokens": len(train_ids),
        "test_tokens": len(test_ids),
        "parameters": sum(p.numel() for p in model.parameters()),
        "python": platform.python_version(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "train_seconds": round(time.time() - started),
    }
    print(json.dumps(figures, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    (args.out / "training.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
