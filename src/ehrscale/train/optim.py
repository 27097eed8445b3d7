"""AdamW, as ``torch.optim.AdamW`` computes it, without its import cost.

Why not ``torch.optim.AdamW``: every ``torch.optim`` optimiser imports ``torch._dynamo`` on
its first call (``Optimizer.__init__`` and ``step`` are wrapped for the compiler): 3.0-3.3 s
on this project's 2-core machine (``python -c "import torch, torch._dynamo"`` 6.1-6.6 s
against 2.9-3.6 s for ``import torch``). The default run has about 120 training jobs
(stable segments, cooldowns, LR-sweep runs) of seconds to a minute each, so that import
alone was about 6 minutes of its job time.

The update is torch's, operation for operation (its ``_single_tensor_adam`` with decoupled
weight decay: ``p *= 1 - lr wd``; ``m.lerp_(g, 1 - b1)``; ``v = b2 v + (1 - b2) g^2``;
``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``), done with ``torch._foreach``
ops, so results equal ``torch.optim.AdamW``'s bit for bit on CPU (tested). ``state_dict`` has
torch's layout, and ``load_state_dict`` takes torch's: checkpoints move between the two.
"""

from __future__ import annotations

from typing import Any

import torch


class AdamW:
    """``param_groups``: dicts with ``params``, ``lr``, ``betas``, ``eps``, ``weight_decay``; the
    training loop sets each group's ``lr`` before every step, as with ``torch.optim``."""

    def __init__(self, groups: list[dict], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        self.param_groups = [defaults | {k: v for k, v in g.items() if k != "params"} | {"params": list(g["params"])}
                             for g in groups]
        self.state: dict[torch.Tensor, dict[str, Any]] = {}

    def zero_grad(self) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p not in self.state:  # torch keeps the step count as a CPU float tensor
                    self.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                                     "exp_avg_sq": torch.zeros_like(p)}
            states = [self.state[p] for p in params]
            grads = [p.grad for p in params]
            m, v = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
            (beta1, beta2), lr, eps, wd = g["betas"], g["lr"], g["eps"], g["weight_decay"]
            for s in states:
                s["step"] += 1
            if wd != 0:
                torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_lerp_(m, grads, 1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
            for p, s, m_i, v_i in zip(params, states, m, v):  # scalars per tensor, as torch's loop
                t = s["step"].item()
                bias2_sqrt = (1 - beta2**t) ** 0.5
                denom = (v_i.sqrt() / bias2_sqrt).add_(eps)
                p.addcdiv_(m_i, denom, value=-(lr / (1 - beta1**t)))

    def state_dict(self) -> dict:
        """torch's layout: parameters numbered in group order."""
        index: dict[torch.Tensor, int] = {}
        groups = []
        for g in self.param_groups:
            ids = [index.setdefault(p, len(index)) for p in g["params"]]
            groups.append({k: v for k, v in g.items() if k != "params"} | {"params": ids})
        state = {index[p]: {k: v.clone() for k, v in s.items()} for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict) -> None:
        """This class's or ``torch.optim.AdamW``'s state dict, for the same parameter groups."""
        if len(sd["param_groups"]) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(sd["param_groups"], self.param_groups)):
            raise ValueError("optimizer state has other parameter groups than this model")
        by_id = {}
        for saved, group in zip(sd["param_groups"], self.param_groups):
            for k in ("lr", "betas", "eps", "weight_decay"):
                group[k] = tuple(saved[k]) if k == "betas" else saved[k]
            by_id.update(zip(saved["params"], group["params"]))
        self.state = {}
        for i, s in sd["state"].items():
            p = by_id[int(i)]
            self.state[p] = {"step": torch.as_tensor(s["step"], dtype=torch.float32).detach().clone().cpu(),
                             "exp_avg": s["exp_avg"].detach().clone().to(p.device, p.dtype),
                             "exp_avg_sq": s["exp_avg_sq"].detach().clone().to(p.device, p.dtype)}
