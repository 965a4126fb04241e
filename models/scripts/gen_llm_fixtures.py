#!/usr/bin/env python3
"""Reference outputs of Hugging Face transformers for uqa's causal LM (models/src/llm).

Two kinds of fixtures, both committed so the Rust tests need no Python:

  tiny   Small RANDOM Qwen2 (tied and untied output) and Llama models: config.json and
         safetensors weights (the Llama one sharded, to test the index path), the same weights as
         an f32 GGUF written the way llama.cpp's converter writes them (llama q/k permuted), and
         HF's logits for a left-padded and a right-padded batch run from inputs_embeds with
         position_ids = cumsum(mask) - 1. -> models/tests/fixtures/llm/<name>/

  gguf   Greedy continuations of the real GGUF models fetched by `scripts/fetch-assets.sh llm`
         (transformers dequantises them to f32): chat-formatted prompt text, prompt ids and
         continuation ids, plus the top-2 logit margin of each step (to tell near-ties from
         bugs). -> models/tests/fixtures/llm/gguf_<model>.json

Usage (venv with torch, "transformers>=4.50,<5", safetensors, gguf, accelerate, numpy):

  python models/scripts/gen_llm_fixtures.py [tiny] [gguf]      (default: both)
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "fixtures" / "llm"


def cache_dir() -> Path:
    """$UQA_CACHE, else $XDG_CACHE_HOME/uqa, else ~/.cache/uqa (as data/src/assets.rs)."""
    if os.environ.get("UQA_CACHE"):
        return Path(os.environ["UQA_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "uqa"
    return Path.home() / ".cache" / "uqa"


# ----------------------------------------------------------------------------------------------
# tiny random models


TINY = {
    "qwen2_tied": dict(arch="qwen2", tie=True),
    "qwen2_untied": dict(arch="qwen2", tie=False),
    "llama": dict(arch="llama", tie=False),
}


def tiny_model(arch: str, tie: bool):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        hidden_act="silu",
        attn_implementation="eager",
    )
    if arch == "qwen2":
        cfg = Qwen2Config(rms_norm_eps=1e-6, rope_theta=1e6, eos_token_id=299, **common)
        model = Qwen2ForCausalLM(cfg)
    else:
        cfg = LlamaConfig(rms_norm_eps=1e-5, rope_theta=1e5, eos_token_id=2, **common)
        model = LlamaForCausalLM(cfg)
    # Random weights of a realistic scale everywhere (norm weights and biases too, so a wrong
    # mapping of any tensor shows up in the logits).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    return model.eval()


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py `LlamaModel.permute`: rotate-half -> interleaved RoPE."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_tiny_gguf(model, arch: str, path: Path):
    """The model as an f32 GGUF with llama.cpp's tensor names, metadata and a dummy vocab."""
    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2" if arch == "qwen2" else "smollm")
    # A byte-level vocabulary: the 256 byte symbols, then merged pairs, then a few specials.
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    tokens = list(symbols)
    merges = []
    for a, b in [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "w"), ("o", "r")]:
        merges.append(f"{a} {b}")
        tokens.append(a + b)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    while len(tokens) + len(specials) < cfg.vocab_size:
        tokens.append(f"<unused{len(tokens)}>")
    tokens += specials
    types = [1] * (cfg.vocab_size - len(specials)) + [3] * len(specials)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(cfg.vocab_size - 1)
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for i in range(cfg.num_hidden_layers):
        for hf, cpp in per_layer.items():
            for kind in ("weight", "bias"):
                names[f"model.layers.{i}.{hf}.{kind}"] = f"blk.{i}.{cpp}.{kind}"
    for hf_name, t in sd.items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        name = names[hf_name]
        if arch == "llama" and ".attn_q." in name:
            t = llama_cpp_permute(t, heads)
        if arch == "llama" and ".attn_k." in name:
            t = llama_cpp_permute(t, kv_heads)
        w.add_tensor(name, np.ascontiguousarray(t, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gen_tiny():
    from safetensors.torch import save_file

    for i, (name, spec) in enumerate(TINY.items()):
        torch.manual_seed(1234 + i)
        model = tiny_model(spec["arch"], spec["tie"])
        cfg = model.config
        out = OUT / name
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*"):
            old.unlink()
        # The Llama fixture is sharded (model-0000N-of-0000M.safetensors + index) to exercise
        # that path; the others are one model.safetensors.
        shard = "150KB" if spec["arch"] == "llama" else "10GB"
        model.save_pretrained(out, safe_serialization=True, max_shard_size=shard)
        for extra in ("generation_config.json",):
            (out / extra).unlink(missing_ok=True)
        write_tiny_gguf(model, spec["arch"], out / "model.gguf")

        lengths = [7, 4, 1]
        t = max(lengths)
        ids = torch.randint(0, cfg.vocab_size, (len(lengths), t))
        tensors = {}
        for side in ("left", "right"):
            mask = torch.zeros(len(lengths), t, dtype=torch.long)
            for r, n in enumerate(lengths):
                if side == "left":
                    mask[r, t - n :] = 1
                else:
                    mask[r, :n] = 1
            if side == "left":
                # Token embeddings of real ids (checks embed_tokens as well).
                x = model.model.embed_tokens(ids).detach()
            else:
                # Arbitrary vectors, as soft prompts are.
                x = 0.5 * torch.randn(len(lengths), t, cfg.hidden_size)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                logits = model(
                    inputs_embeds=x, attention_mask=mask, position_ids=positions
                ).logits
            tensors[f"{side}.ids"] = ids.clone().to(torch.int64)
            tensors[f"{side}.mask"] = mask.to(torch.int64)
            tensors[f"{side}.inputs_embeds"] = x.float().contiguous()
            tensors[f"{side}.logits"] = (logits * mask[..., None]).float().contiguous()
        save_file(tensors, str(out / "reference.safetensors"))
        size = sum(f.stat().st_size for f in out.iterdir())
        print(f"tiny: {out} ({size} bytes)")


# ----------------------------------------------------------------------------------------------
# real GGUF models, greedy continuations

GGUF_MODELS = {
    "qwen2.5-coder-0.5b-instruct": (
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        [
            "Write a Python function that reverses a string.",
            "What does the acronym HTTP stand for?",
        ],
    ),
    "smollm2-135m-instruct": (
        "smollm2-135m-instruct-q4_1.gguf",
        [
            "What is the capital of France?",
            "Give me a short tip for writing clean code.",
            "Name a fruit that is yellow.",
        ],
    ),
}
NEW_TOKENS = 20


def gen_gguf():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llm = cache_dir() / "llm"
    for name, (file, prompts) in GGUF_MODELS.items():
        if not (llm / file).exists():
            sys.exit(f"gguf: {llm / file} missing; run scripts/fetch-assets.sh llm")
        tok = AutoTokenizer.from_pretrained(llm, gguf_file=file)
        model = AutoModelForCausalLM.from_pretrained(
            llm, gguf_file=file, torch_dtype=torch.float32
        ).eval()
        stop = {tok.eos_token_id}
        if "<|im_end|>" in tok.get_vocab():
            stop.add(tok.convert_tokens_to_ids("<|im_end|>"))
        cases = []
        for prompt in prompts:
            text = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            ids = tok(text, add_special_tokens=False)["input_ids"]
            # Greedy, one token at a time with the KV cache, stopping after a stop token.
            out, margins = [], []
            past = None
            x = torch.tensor([ids])
            with torch.no_grad():
                for _ in range(NEW_TOKENS):
                    r = model(input_ids=x, past_key_values=past, use_cache=True)
                    past = r.past_key_values
                    top = torch.topk(r.logits[0, -1], 2)
                    nxt = int(top.indices[0])
                    out.append(nxt)
                    margins.append(float(top.values[0] - top.values[1]))
                    if nxt in stop:
                        break
                    x = torch.tensor([[nxt]])
            print(f"gguf {name}: {prompt!r} -> {tok.decode(out)!r} (min margin {min(margins):.3f})")
            cases.append(
                dict(
                    prompt=prompt,
                    text=text,
                    prompt_ids=ids,
                    continuation_ids=out,
                    continuation_text=tok.decode(out),
                    top2_margins=[round(m, 4) for m in margins],
                )
            )
        fixture = dict(
            model=name,
            file=file,
            generator=f"transformers {__import__('transformers').__version__}, float32, greedy",
            stop_ids=sorted(stop),
            cases=cases,
        )
        path = OUT / f"gguf_{name}.json"
        path.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")
        print(f"gguf: {path}")
        del model


if __name__ == "__main__":
    what = sys.argv[1:] or ["tiny", "gguf"]
    OUT.mkdir(parents=True, exist_ok=True)
    for w in what:
        {"tiny": gen_tiny, "gguf": gen_gguf}[w]()
