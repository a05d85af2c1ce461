"""The five built-in methods written the ordinary PyTorch way, for the benchmark only.

Each model mirrors its sparsekit counterpart (same forward pass, loss and parameter shapes,
the same initial values when they are passed in) but lets autograd differentiate it and
``torch.optim.Adam`` (default settings) update it; Arora et al.'s rule has no gradient and
is written with plain tensor operations under ``torch.no_grad()``. The k-sparse model is
written as a PyTorch user would: ``torch.topk`` then a dense B×H code (``scatter``) that
autograd differentiates densely.

PyTorch is never a dependency of sparsekit: ``bench/bench_train.py`` imports this module
only when ``torch`` is installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


class TorchAutoencoder:
    """plain / l2 / kl / ksparse: Z = X W_encᵀ + b_enc, code, Y = code W_dec + b_dec."""

    def __init__(
        self,
        method: str,
        params: Mapping[str, np.ndarray],
        device: str,
        *,
        lr: float,
        weight_decay: float = 0.0,
        rho: float = 0.1,
        beta: float = 3.0,
        k: int = 25,
    ) -> None:
        self.method = method
        self.params = {
            name: torch.tensor(np.asarray(value, np.float32), device=device, requires_grad=True)
            for name, value in params.items()
        }
        self.tied = "W_dec" not in self.params
        self.weight_decay = weight_decay
        self.rho, self.beta, self.k = rho, beta, k
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=lr)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        w_dec = p["W_enc"] if self.tied else p["W_dec"]
        z = x @ p["W_enc"].T + p["b_enc"]
        if self.method == "ksparse":
            values, indices = torch.topk(z, self.k, dim=1, sorted=False)
            code = torch.zeros_like(z).scatter(1, indices, values)
            xhat = code @ w_dec + p["b_dec"]
        else:
            code = torch.sigmoid(z)
            xhat = torch.sigmoid(code @ w_dec + p["b_dec"])
        loss = 0.5 * ((xhat - x) ** 2).sum() / x.shape[0]
        if self.method in ("l2", "kl"):
            decay = (p["W_enc"] ** 2).sum()
            if not self.tied:
                decay = decay + (p["W_dec"] ** 2).sum()
            loss = loss + 0.5 * self.weight_decay * decay
        if self.method == "kl":
            rho = self.rho
            rho_hat = code.mean(dim=0).clamp(1e-6, 1 - 1e-6)
            kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
            loss = loss + self.beta * kl.sum()
        return loss

    def step(self, x: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(x)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


class TorchArora:
    """Arora et al.: S = Y Wᵀ, X = S∘1[|S| ≥ τ], R = X W − Y, W ← W − η sgn(X)ᵀR / B, renormalise."""

    def __init__(
        self, params: Mapping[str, np.ndarray], device: str, *, lr: float, tau: float = 1.0
    ) -> None:
        self.w = torch.tensor(np.asarray(params["W_enc"], np.float32), device=device)
        self.lr, self.tau = lr, tau

    @torch.no_grad()
    def step(self, y: torch.Tensor) -> torch.Tensor:
        w = self.w
        s = y @ w.T
        code = s * (s.abs() >= self.tau)
        residual = code @ w - y
        g_hat = torch.sign(code).T @ residual / y.shape[0]
        w -= self.lr * g_hat
        w /= w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return 0.5 * (residual * residual).sum() / y.shape[0]


def make_model(
    method: str, params: Mapping[str, np.ndarray], device: str, settings: Mapping[str, Any]
) -> Any:
    """The PyTorch twin of a sparsekit method, from its initial parameters and settings."""
    lr = float(settings["lr"])
    if method == "arora":
        return TorchArora(params, device, lr=lr, tau=float(settings.get("tau", 1.0)))
    return TorchAutoencoder(
        method,
        params,
        device,
        lr=lr,
        weight_decay=float(settings.get("weight_decay", 0.0)),
        rho=float(settings.get("rho", 0.1)),
        beta=float(settings.get("beta", 3.0)),
        k=int(settings.get("k", 25)),
    )
