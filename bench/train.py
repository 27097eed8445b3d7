"""Training throughput: ehrscale's GPT vs Hugging Face ``LlamaForCausalLM`` at an identical config.

Both models get the same vocabulary, layers, d_model, heads, SwiGLU intermediate size, tied
embeddings, no biases, RoPE theta, SDPA attention; the same batches (one patient segment
per row, ``window_mode=pad``, so both use plain causal attention), the same AdamW
(0.9, 0.95, wd 0.1 on matrices) with grad clipping at 1.0, and the same number of steps.
Before timing, our weights are copied into the HF model and the two losses on one batch
are compared, to show the architectures really are the same.

Each repeat builds fresh models and trains both on the same batches, alternating step by
step (ours, HF, HF, ours, ...), so load from other processes on a shared machine hits both
alike; a repeat's tokens/s is its timed tokens over the summed wall time of its timed
steps. The median over repeats of each is reported with the ratio ours / HF.

    .venv/bin/python bench/train.py [--d-model 64 --n-layer 3 --n-head 4 --vocab 2000 \\
        --context 256 --batch 4 --steps 30 --repeats 3 --threads 1 --device cpu]

Needs the ``bench`` extra (``pip install transformers``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def build_batches(args) -> list:
    from ehrscale.tokens.store import TokenSplit
    from ehrscale.tokens.toy import write_synthetic_tokens
    from ehrscale.train.data import WindowStream

    tmp = tempfile.mkdtemp(prefix="ehrscale-bench-")
    write_synthetic_tokens(tmp, vocab_size=args.vocab, n_subjects={"train": 300, "tuning": 2, "held_out": 2},
                           mean_length=4 * args.context, seed=0)
    stream = WindowStream(TokenSplit(f"{tmp}/train"), args.context, seed=0, mode="pad")
    batches, epoch, row = [], 0, 0
    for _ in range(args.steps + args.warmup):
        batch, epoch, row = stream.next_batch(epoch, row, args.batch)
        batches.append(batch)
    return batches


def make_ours(args, device):
    from ehrscale.model.config import GPTConfig
    from ehrscale.model.gpt import GPT

    cfg = GPTConfig(vocab_size=args.vocab, n_layer=args.n_layer, d_model=args.d_model, n_head=args.n_head,
                    context_length=args.context)
    return GPT(cfg).to(device), cfg


def make_hf(cfg, device):
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_hidden,
        num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_head,
        max_position_embeddings=cfg.context_length, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=True,
        attention_bias=False, mlp_bias=False, hidden_act="silu",
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
    )
    hf_cfg._attn_implementation = "sdpa"
    model = LlamaForCausalLM(hf_cfg).to(device)
    model.config.use_cache = False
    return model


@torch.no_grad()
def copy_weights(ours, hf, cfg) -> None:
    d, h = cfg.d_model, cfg.ffn_hidden
    hf.model.embed_tokens.weight.copy_(ours.embed.weight)
    hf.model.norm.weight.copy_(ours.norm.weight)
    for blk, layer in zip(ours.blocks, hf.model.layers):
        q, k, v = blk.attn.qkv.weight.split(d, dim=0)
        layer.self_attn.q_proj.weight.copy_(q)
        layer.self_attn.k_proj.weight.copy_(k)
        layer.self_attn.v_proj.weight.copy_(v)
        layer.self_attn.o_proj.weight.copy_(blk.attn.proj.weight)
        gate, up = blk.mlp.gate_up.weight.split(h, dim=0)
        layer.mlp.gate_proj.weight.copy_(gate)
        layer.mlp.up_proj.weight.copy_(up)
        layer.mlp.down_proj.weight.copy_(blk.mlp.down.weight)
        layer.input_layernorm.weight.copy_(blk.attn_norm.weight)
        layer.post_attention_layernorm.weight.copy_(blk.mlp_norm.weight)


def ours_loss(model, b):
    return model(b.inputs, b.targets, b.positions, b.segments)[1]


def hf_loss(model, b):
    # targets are already shifted: pass them as shift_labels so HF does not shift again
    return model(input_ids=b.inputs, labels=b.targets, shift_labels=b.targets, use_cache=False).loss


def make_opt(model):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                             lr=1e-3, betas=(0.9, 0.95))


def train_step(model, opt, loss_fn, batch, device) -> float:
    """One optimiser step; returns its wall seconds."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    loss = loss_fn(model, batch.to(device))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def interleaved_repeat(runners, batches, warmup, device) -> dict[str, dict[str, float]]:
    """Train every runner on the same batches, alternating step by step (and alternating
    which goes first), so load from other processes falls on all of them alike.
    Returns per runner: tokens/s over the timed steps and tokens/s from the median step."""
    states = {name: (model, make_opt(model), fn, []) for name, model, fn in runners}
    order = list(states)
    for i, b in enumerate(batches):
        for name in (order if i % 2 == 0 else order[::-1]):
            model, opt, fn, times = states[name]
            dt = train_step(model, opt, fn, b, device)
            if i >= warmup:
                times.append(dt)
    tokens = sum(b.n_targets for b in batches[warmup:])
    out = {}
    for name, (_, _, _, times) in states.items():
        out[name] = {"tps": tokens / sum(times),
                     "tps_median_step": (tokens / len(times)) / statistics.median(times)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=2000)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=3)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    import transformers

    batches = build_batches(args)
    torch.manual_seed(0)
    ours, cfg = make_ours(args, device)
    hf = make_hf(cfg, device)
    copy_weights(ours, hf, cfg)
    b = batches[0].to(device)
    with torch.no_grad():
        l_ours, l_hf = float(ours_loss(ours, b)), float(hf_loss(hf, b))
    n_ours = sum(q.numel() for q in ours.parameters())
    n_hf = sum(q.numel() for q in hf.parameters())
    print(f"config: vocab {cfg.vocab_size}, ctx {cfg.context_length}, d_model {cfg.d_model}, n_layer {cfg.n_layer}, "
          f"n_head {cfg.n_head}, ffn {cfg.ffn_hidden}, tied, no bias; batch {args.batch}x{args.context}, "
          f"{args.steps} timed steps (+{args.warmup} warmup), {args.repeats} interleaved repeats, "
          f"{args.threads} thread(s), device {device}, torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"params: ours {n_ours:,}, HF {n_hf:,}; same weights -> loss ours {l_ours:.6f}, HF {l_hf:.6f}, "
          f"|diff| {abs(l_ours - l_hf):.2e}")

    results = []
    for r in range(args.repeats):
        torch.manual_seed(r)
        runners = [("ours", make_ours(args, device)[0], ours_loss), ("hf", make_hf(cfg, device), hf_loss)]
        res = interleaved_repeat(runners, batches, args.warmup, device)
        results.append(res)
        print(f"  repeat {r + 1}: ours {res['ours']['tps']:>9,.0f} tok/s, HF {res['hf']['tps']:>9,.0f} tok/s, "
              f"ratio {res['ours']['tps'] / res['hf']['tps']:.3f}   (median-step: ours {res['ours']['tps_median_step']:,.0f}, "
              f"HF {res['hf']['tps_median_step']:,.0f})", flush=True)
    mo = statistics.median(r["ours"]["tps"] for r in results)
    mh = statistics.median(r["hf"]["tps"] for r in results)
    ratios = [r["ours"]["tps"] / r["hf"]["tps"] for r in results]
    print(f"median tokens/s over {args.repeats} repeats: ours {mo:,.0f}, HF LlamaForCausalLM {mh:,.0f}, "
          f"ratio ours/HF {mo / mh:.3f} (median per-repeat ratio {statistics.median(ratios):.3f}, "
          f"range {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
