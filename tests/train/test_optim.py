"""ehrscale.train.optim.AdamW: torch.optim.AdamW's numbers, bit for bit on CPU, without importing torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import torch

from ehrscale.train.optim import AdamW


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(11, 6), torch.nn.LayerNorm(6), torch.nn.Linear(6, 11))


def _groups(m: torch.nn.Module) -> list[dict]:
    return [{"params": [p for p in m.parameters() if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in m.parameters() if p.dim() < 2], "weight_decay": 0.0}]


def _steps(m, opt, n: int, start: int = 0) -> None:
    x = torch.arange(32) % 11
    for step in range(start, start + n):
        for g in opt.param_groups:
            g["lr"] = 3e-2 * (1 - step / 80)
        torch.nn.functional.cross_entropy(m(x), (x * 3 + 1) % 11).backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
        opt.step()
        opt.zero_grad()


def _equal(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_updates_equal_torch_adamw_bit_for_bit():
    theirs, ours = _model(), _model()
    _steps(theirs, torch.optim.AdamW(_groups(theirs), lr=0.03, betas=(0.9, 0.99)), 40)
    _steps(ours, AdamW(_groups(ours), lr=0.03, betas=(0.9, 0.99)), 40)
    assert _equal(theirs, ours)
    assert not _equal(ours, _model())  # it trained


def test_state_dicts_move_between_the_two_and_resume_exactly():
    straight = _model()
    opt = AdamW(_groups(straight), lr=0.03, betas=(0.9, 0.99))
    _steps(straight, opt, 30)
    first = _model()
    torch_opt = torch.optim.AdamW(_groups(first), lr=0.03, betas=(0.9, 0.99))
    _steps(first, torch_opt, 15)
    resumed = _model()
    resumed.load_state_dict(first.state_dict())
    ours = AdamW(_groups(resumed), lr=0.03, betas=(0.9, 0.99))
    ours.load_state_dict(torch_opt.state_dict())  # a checkpoint written by torch.optim.AdamW
    again = _model()
    again.load_state_dict(resumed.state_dict())
    ours_again = AdamW(_groups(again), lr=0.03, betas=(0.9, 0.99))
    ours_again.load_state_dict(ours.state_dict())  # and our own
    _steps(resumed, ours, 15, start=15)
    _steps(again, ours_again, 15, start=15)
    assert _equal(straight, resumed) and _equal(straight, again)


def test_a_training_step_does_not_import_dynamo():
    code = ("import sys, torch; from ehrscale.train.optim import AdamW; m = torch.nn.Linear(3, 2); "
            "o = AdamW([{'params': list(m.parameters())}], lr=0.1); m(torch.ones(1, 3)).sum().backward(); "
            "torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); o.step(); o.zero_grad(); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
