"""Write a Llama-shaped model with random weights (and a real tokenizer) for speed and memory
benchmarks where no real checkpoint can travel (the GPU machine, 64 MiB carry limit).
Never use it for quality claims: its perplexity is meaningless.

    python benchmarks/random_llama.py OUT_DIR --tokenizer DIR [--shape llama2-7b] [--layers 4]
"""
from __future__ import annotations

import argparse

SHAPES = {  # hidden, intermediate, heads, kv heads
    "llama2-7b": (4096, 11008, 32, 32),
    "llama2-13b": (5120, 13824, 40, 40),
    "llama3-8b": (4096, 14336, 32, 8),
    "small": (1024, 2816, 16, 16),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--tokenizer", required=True, help="a directory with tokenizer files")
    ap.add_argument("--shape", default="llama2-7b", choices=sorted(SHAPES))
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dtype", default="float16")
    a = ap.parse_args()

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    hidden, inter, heads, kv = SHAPES[a.shape]
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=a.layers, num_attention_heads=heads,
                      num_key_value_heads=kv, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(cfg).to(getattr(torch, a.dtype))
    model.save_pretrained(a.out)
    tok.save_pretrained(a.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {a.out}: {a.shape} x {a.layers} layers, {n / 1e6:.0f}M parameters")


if __name__ == "__main__":
    main()
