"""Model: parameter counts, FLOPs against FlopCounterMode, causal attention, packing masks."""

import dataclasses

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ehrscale.core.errors import EhrscaleError
from ehrscale.model.config import DEBUG_SIZES, DEFAULT_SIZES, GPTConfig, flops_per_token, param_counts
from ehrscale.model.gpt import GPT

torch.set_num_threads(1)


def _cfg(**kw):
    base = dict(vocab_size=97, n_layer=2, d_model=32, n_head=2, context_length=64)
    base.update(kw)
    return GPTConfig(**base)


def test_param_counts_match_hand_formula_and_module():
    cfg = _cfg()
    h = 88  # 8 * ceil(8/3 * 32 / 8)
    assert cfg.ffn_hidden == h
    per_layer = 4 * 32 * 32 + 3 * 32 * h + 2 * 32
    non_emb = 2 * per_layer + 32
    counts = param_counts(cfg)
    assert counts == {"total": non_emb + 97 * 32, "non_embedding": non_emb, "embedding": 97 * 32}
    model = GPT(cfg)
    assert model.num_params() == counts
    assert sum(p.numel() for p in model.parameters()) == counts["total"]  # tied: embedding counted once
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())


def test_ladders_are_valid_and_span_the_range():
    for ladder in (DEFAULT_SIZES, DEBUG_SIZES):
        for size in ladder.values():
            GPTConfig.from_size(size, 2000)
    non_emb = [param_counts(GPTConfig.from_size(s, 2000))["non_embedding"] for s in DEFAULT_SIZES.values()]
    assert non_emb == sorted(non_emb) and 0.05e6 < non_emb[0] < 0.2e6 and 0.8e9 < non_emb[-1] < 1.3e9
    totals = [param_counts(GPTConfig.from_size(s, 2000))["total"] for s in DEBUG_SIZES.values()]
    assert 15e3 < totals[0] < 20e3 and 500e3 < totals[-1] < 550e3


@pytest.mark.parametrize("shape", [dict(n_layer=2, d_model=32, n_head=2, vocab_size=97), dict(n_layer=3, d_model=64, n_head=4, vocab_size=500)])
def test_flops_match_flop_counter(shape):
    cfg = _cfg(**shape, context_length=128)
    model = GPT(cfg)
    b, t = 2, cfg.context_length
    idx = torch.randint(0, cfg.vocab_size, (b, t))
    # The CPU flash kernel is not in FlopCounterMode's registry; the math backend decomposes
    # attention into counted matmuls (full, un-halved score matrix).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, loss = model(idx, idx)
        loss.backward()
    measured = counter.get_total_flops() / (b * t)
    predicted = flops_per_token(cfg, attention="full")
    assert abs(measured - predicted) / measured < 0.10, (measured, predicted)
    # the causal count used for budgets is the full one minus half the attention term
    assert flops_per_token(cfg) == predicted - 6 * cfg.n_layer * t * cfg.d_model
    assert flops_per_token(cfg, attention="none") == 6 * param_counts(cfg)["total"]


def test_causal_later_tokens_do_not_change_earlier_logits():
    torch.manual_seed(0)
    cfg = _cfg()
    model = GPT(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 40))
    idx2 = idx.clone()
    idx2[:, 25:] = torch.randint(0, cfg.vocab_size, (2, 15))
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(idx2)
    torch.testing.assert_close(a[:, :25], b[:, :25])
    assert not torch.allclose(a[:, 25:], b[:, 25:])


def test_packed_segments_are_independent():
    """A packed row gives each patient the logits it would get alone in its own row."""
    torch.manual_seed(0)
    cfg = _cfg()
    model = GPT(cfg).eval()
    p1 = torch.randint(0, cfg.vocab_size, (1, 10))
    p2 = torch.randint(0, cfg.vocab_size, (1, 14))
    packed = torch.cat([p1, p2], dim=1)
    positions = torch.cat([torch.arange(10), torch.arange(14)]).unsqueeze(0)
    segments = torch.cat([torch.zeros(10), torch.ones(14)]).long().unsqueeze(0)
    with torch.no_grad():
        lp, _ = model(packed, positions=positions, segments=segments)
        l1, _ = model(p1)
        l2, _ = model(p2)
    torch.testing.assert_close(lp[:, :10], l1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lp[:, 10:], l2, atol=1e-5, rtol=1e-5)


def test_bad_shapes_are_errors():
    with pytest.raises(EhrscaleError, match="divisible"):
        _cfg(d_model=30, n_head=4)
    with pytest.raises(EhrscaleError, match="n_headz"):
        GPTConfig.from_size({"n_layer": 1, "d_model": 8, "n_headz": 1}, 10)


@pytest.mark.parametrize("d_model", [8, 64])
def test_init_std_defaults_to_one_over_sqrt_width(d_model):
    cfg = _cfg(d_model=d_model, n_layer=2, vocab_size=4000)
    assert cfg.init_std == pytest.approx(d_model**-0.5)
    torch.manual_seed(0)
    model = GPT(cfg)
    # the embedding and the un-scaled projections draw at init_std; the residual outputs at init_std/sqrt(2L)
    assert model.embed.weight.std().item() == pytest.approx(d_model**-0.5, rel=0.05)
    down = [p for n, p in model.named_parameters() if n.endswith("down.weight")]
    assert torch.cat([p.flatten() for p in down]).std().item() == pytest.approx(d_model**-0.5 / 2, rel=0.1)
    # a fixed value is kept as given, and a checkpoint's resolved value rebuilds the same model
    assert _cfg(d_model=d_model, init_std=0.02).init_std == 0.02
    assert GPTConfig(**dataclasses.asdict(cfg)).init_std == cfg.init_std
    with pytest.raises(EhrscaleError, match="init_std"):
        _cfg(init_std=0.0)
