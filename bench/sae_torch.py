"""Today's sparse autoencoders written the ordinary PyTorch way: the reference for sparsekit's.

Benchmark-only (PyTorch is never a sparsekit dependency). Every model is written from the
papers' formulas with autograd doing the gradients; the only hand-written backward passes are
the JumpReLU straight-through estimators, which the paper defines by their pseudo-derivatives
(a ``torch.autograd.Function``, as in the paper's own pseudo-code). Conventions follow
sparsekit's so the two can be trained with the same settings (``docs/methods.md``):

* X̃ = X − b_dec (pre-encoder bias), Z = X̃ W_encᵀ + b_enc, X̂ = A W_dec + b_dec; W_enc and
  W_dec are H×D (row j is latent j).
* Reconstruction term (1/2B)‖X̂ − X‖² (summed over features, averaged over the batch).
* Initialisation (Gao et al.): random unit decoder rows, W_enc = W_dec, biases zero, then
  b_dec = the geometric median (Weiszfeld) of an initial data sample.
* Decoder rows kept at unit norm: the gradient component parallel to each row is removed
  before the Adam step, the rows are renormalised after it.
* A latent is dead when it has not fired (code > 0) for ``dead_after`` training samples.

Methods (``make_model(name, ...)``):

``topk``      Gao et al. 2024 (arXiv 2406.04093): A = ReLU(TopK_k(Z)); AuxK loss
              w·(1/2B)‖Ê − R‖², Ê = A_aux W_dec (no b_dec), A_aux the k_aux largest
              (ReLU'd) pre-activations of dead latents, R = sg(X − X̂), w = α·N_X/N_R with
              N_X = ‖X − x̄‖², N_R = ‖R − r̄‖² (constants), α = ``aux_coef``.
``batchtopk`` Bussmann, Leask & Nanda 2024 (arXiv 2412.06410): the B·k largest entries of
              ReLU(Z) over the whole batch; AuxK as topk; inference A = Z ⊙ 1[Z > θ] with
              θ ← (1 − r)θ + r·min{kept A > 0} after every step (θ starts at the first
              batch's minimum), r = ``threshold_rate``.
``matryoshka`` Bussmann et al. 2025 (arXiv 2503.17547): BatchTopK code, loss summed over the
              nested prefixes m_1 < … < m_Q = H: Σ_g (1/2B)‖A[:, :m_g] W_dec[:m_g] + b_dec − X‖²,
              plus AuxK on the full dictionary's residual.
``jumprelu``  Rajamanoharan et al. 2024 (arXiv 2407.14435): F = Z ⊙ H(Z − θ), θ = exp(t);
              loss (1/2B)‖X̂ − X‖² + (λ/B)Σ H(Z − θ); pseudo-derivatives (eq. 11-12)
              ð/ðθ JumpReLU = −(θ/ε)K((z − θ)/ε), ð/ðθ H = −(1/ε)K((z − θ)/ε), K(u) = 1[|u| < ½].
              No pre-encoder bias by default (``pre_bias``), like sparsekit's.
``gated``     Rajamanoharan et al. 2024 (arXiv 2404.16014): π_gate = X̃W_gᵀ + b_gate,
              π_mag = (X̃W_gᵀ) ⊙ exp(r_mag) + b_mag, A = 1[π_gate > 0] ⊙ ReLU(π_mag); loss
              (1/2B)‖X̂ − X‖² + (λ/B)Σ ReLU(π_gate) + (1/2B)‖ReLU(π_gate) sg(W_dec) + sg(b_dec) − X‖².
``standard``  Conerly et al., Circuits Updates April 2024 (SAELens ``standard``): F = ReLU(Z),
              loss (1/2B)‖X̂ − X‖² + (λ_t/B)Σ_ij F_ij‖W_dec[j]‖, λ_t = λ·min(1, (t+1)/T) over
              T = ``l1_warm_up_steps`` steps; decoder rows *not* normalised, initialised at
              norm 0.1 with W_enc = W_dec.
``mp-sae``    Costa et al. 2025 (arXiv 2506.03093), as SAELens' ``_encode_matching_pursuit``
              trains it: r = X − b_dec, k times: j = argmax ReLU(r W_decᵀ) under ``no_grad``,
              c = ReLU(⟨r, W_dec[j]⟩) *with* autograd, a[j] += c, r −= c·W_dec[j];
              X̂ = a W_dec + b_dec. No encoder weights (the dictionary is W_dec, unit rows).

``train(name, data, settings, seed)`` trains one model and returns its numpy weights and a
function that encodes at inference time. Run as a script (``python bench/sae_torch.py JOB``)
it reads a job (JSON) written by ``bench/sae_compare.py`` and writes the results there.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# --------------------------------------------------------------------------- helpers


def geometric_median(x: torch.Tensor, iters: int = 100, tol: float = 1e-5) -> torch.Tensor:
    """Weiszfeld's iteration from the mean."""
    y = x.mean(dim=0)
    for _ in range(iters):
        d = torch.linalg.norm(x - y, dim=1).clamp_min(1e-12)
        w = 1.0 / d
        new = (w[:, None] * x).sum(0) / w.sum()
        if torch.linalg.norm(new - y) <= tol * max(1.0, float(torch.linalg.norm(y))):
            return new
        y = new
    return y


def rectangle(u: torch.Tensor) -> torch.Tensor:
    return (u.abs() < 0.5).to(u.dtype)


class JumpReLUFn(torch.autograd.Function):
    """z·H(z − θ); ∂/∂z = H(z − θ) (true), ð/ðθ = −(θ/ε)K((z − θ)/ε) (pseudo-derivative)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        dz = g * (z > theta).to(g.dtype)
        dtheta = (-(theta / eps) * rectangle((z - theta) / eps) * g).sum(dim=0)
        return dz, dtheta, None


class StepFn(torch.autograd.Function):
    """H(z − θ); ∂/∂z = 0 (true a.e.), ð/ðθ = −(1/ε)K((z − θ)/ε) (pseudo-derivative)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        dtheta = (-(1.0 / eps) * rectangle((z - theta) / eps) * g).sum(dim=0)
        return torch.zeros_like(z), dtheta, None


def half_mse(xhat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(1/2B)‖X̂ − X‖²."""
    return 0.5 * (xhat - x).pow(2).sum(dim=1).mean()


# --------------------------------------------------------------------------- models

DEFAULTS: dict[str, dict[str, Any]] = {
    "topk": {"k": 32, "k_aux": 512, "aux_coef": 1 / 32, "dead_after": 10_000_000},
    "batchtopk": {
        "k": 32,
        "k_aux": 512,
        "aux_coef": 1 / 32,
        "dead_after": 10_000_000,
        "threshold_rate": 0.01,
    },
    "matryoshka": {
        "k": 32,
        "k_aux": 512,
        "aux_coef": 1 / 32,
        "dead_after": 10_000_000,
        "threshold_rate": 0.01,
        "prefixes": "0.0625,0.125,0.25,0.5,1",
    },
    "jumprelu": {
        "l0_coef": 1e-3,
        "bandwidth": 1e-3,
        "threshold_init": 1e-3,
        "pre_bias": False,
        "dead_after": 0,
    },
    "gated": {"l1_coef": 1.0, "dead_after": 0},
    "standard": {"l1": 0.05, "l1_warm_up_steps": 0, "dead_after": 0},
    "mp-sae": {"k": 16, "dead_after": 0},
}


class TorchSAE:
    """One of the seven models: parameters, loss, inference encoding and bookkeeping."""

    def __init__(
        self,
        name: str,
        dim: int,
        hidden: int,
        params: dict[str, Any],
        generator: torch.Generator,
        sample: torch.Tensor,
    ) -> None:
        if name not in DEFAULTS:
            raise ValueError(f"unknown method {name!r} (use {', '.join(DEFAULTS)})")
        unknown = set(params) - set(DEFAULTS[name])
        if unknown:
            raise ValueError(f"{name}: unknown parameter(s) {sorted(unknown)}")
        self.name = name
        self.p = {**DEFAULTS[name], **params}
        self.hidden = hidden
        w = torch.randn(hidden, dim, generator=generator)
        w /= torch.linalg.norm(w, dim=1, keepdim=True)
        b_dec = geometric_median(sample.double()).float()
        if name == "standard":
            w *= 0.1  # the April update's decoder_init_norm
        weights = {
            "W_enc": w.clone(),
            "b_enc": torch.zeros(hidden),
            "W_dec": w.clone(),
            "b_dec": b_dec,
        }
        if name == "mp-sae":  # no encoder: the pursuit runs over W_dec
            del weights["W_enc"], weights["b_enc"]
        self.steps = 0
        if name == "jumprelu":
            weights["log_threshold"] = torch.full((hidden,), math.log(self.p["threshold_init"]))
        if name == "gated":
            weights["r_mag"] = torch.zeros(hidden)
            weights["b_mag"] = torch.zeros(hidden)
        self.w = {k: v.requires_grad_(True) for k, v in weights.items()}
        self.since_fired = torch.zeros(hidden, dtype=torch.int64)
        self.theta: float | None = None  # batchtopk / matryoshka inference threshold
        if name == "matryoshka":
            fractions = [float(f) for f in str(self.p["prefixes"]).split(",")]
            self.ends = sorted({max(1, round(f * hidden)) for f in fractions})
            if self.ends[-1] != hidden:
                raise ValueError("matryoshka prefixes must end at 1 (the whole dictionary)")

    # -- pieces ------------------------------------------------------------------------------

    def parameters(self) -> list[torch.Tensor]:
        return list(self.w.values())

    def to(self, device: str | torch.device) -> TorchSAE:
        """The model on ``device`` (its weights stay leaves that require gradients), as
        ``nn.Module.to``; ``bench/topk_speed.py`` runs it on CUDA."""
        self.w = {
            k: v.detach().to(device).requires_grad_(True) for k, v in self.w.items()
        }
        self.since_fired = self.since_fired.to(device)
        return self

    def pre(self, x: torch.Tensor, pre_bias: bool = True) -> torch.Tensor:
        xt = x - self.w["b_dec"] if pre_bias else x
        return xt @ self.w["W_enc"].T + self.w["b_enc"]

    def dead_mask(self) -> torch.Tensor | None:
        after = int(self.p.get("dead_after", 0))
        if not after:
            return None
        return self.since_fired >= after

    def _batch_topk(self, z: torch.Tensor) -> torch.Tensor:
        p = torch.relu(z)
        flat = p.reshape(-1)
        vals, idx = flat.topk(min(int(self.p["k"]) * z.shape[0], flat.numel()))
        return torch.zeros_like(flat).scatter(0, idx, vals).view_as(z)

    def _auxk(self, z: torch.Tensor, x: torch.Tensor, xhat: torch.Tensor) -> torch.Tensor | None:
        dead = self.dead_mask()
        if dead is None or self.p["aux_coef"] <= 0 or not bool(dead.any()):
            return None
        dead_idx = torch.nonzero(dead).squeeze(1)
        kk = min(int(self.p["k_aux"]), int(dead_idx.numel()))
        vals, local = z[:, dead_idx].topk(kk, dim=1)
        code_aux = torch.zeros_like(z).scatter(1, dead_idx[local], torch.relu(vals))
        e_hat = code_aux @ self.w["W_dec"]  # no b_dec
        residual = (x - xhat).detach()
        n_x = (x - x.mean(0)).pow(2).sum()
        n_r = (residual - residual.mean(0)).pow(2).sum()
        if not float(n_r) > 0:
            return None
        weight = (self.p["aux_coef"] * n_x / n_r).detach()
        return weight * half_mse(e_hat, residual)

    def pursuit(self, x: torch.Tensor) -> torch.Tensor:
        """SAELens' matching pursuit for exactly k steps: selections without gradient, the
        coefficients and residuals under autograd."""
        w = self.w["W_dec"]
        r = x - self.w["b_dec"]
        acts = torch.zeros(x.shape[0], self.hidden, dtype=x.dtype, device=x.device)
        for _ in range(int(self.p["k"])):
            with torch.no_grad():
                idx = torch.relu(r @ w.T).max(dim=1, keepdim=True).indices
            atoms = w[idx.squeeze(1)]
            values = torch.relu((r * atoms).sum(dim=-1, keepdim=True))
            acts = acts.scatter_add(1, idx, values)
            r = r - values * atoms
        return acts

    @property
    def unit_decoder(self) -> bool:
        return self.name != "standard"

    # -- training and inference --------------------------------------------------------------

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, code) of a training step."""
        name, w = self.name, self.w
        if name == "topk":
            z = self.pre(x)
            vals, idx = z.topk(int(self.p["k"]), dim=1)
            code = torch.zeros_like(z).scatter(1, idx, torch.relu(vals))
            xhat = code @ w["W_dec"] + w["b_dec"]
            loss = half_mse(xhat, x)
            aux = self._auxk(z, x, xhat)
            return (loss if aux is None else loss + aux), code
        if name in ("batchtopk", "matryoshka"):
            z = self.pre(x)
            code = self._batch_topk(z)
            if name == "batchtopk":
                xhat = code @ w["W_dec"] + w["b_dec"]
                loss = half_mse(xhat, x)
            else:
                xhat = w["b_dec"].expand_as(x)
                loss = torch.zeros((), dtype=x.dtype, device=x.device)
                start = 0
                for end in self.ends:
                    xhat = xhat + code[:, start:end] @ w["W_dec"][start:end]
                    loss = loss + half_mse(xhat, x)
                    start = end
            aux = self._auxk(z, x, xhat)
            return (loss if aux is None else loss + aux), code
        if name == "jumprelu":
            z = self.pre(x, bool(self.p["pre_bias"]))
            theta = torch.exp(w["log_threshold"])
            eps = float(self.p["bandwidth"])
            code = JumpReLUFn.apply(z, theta, eps)
            xhat = code @ w["W_dec"] + w["b_dec"]
            l0 = StepFn.apply(z, theta, eps).sum(dim=1).mean()
            return half_mse(xhat, x) + self.p["l0_coef"] * l0, code
        if name == "gated":
            u = (x - w["b_dec"]) @ w["W_enc"].T
            pi_gate = u + w["b_enc"]
            pi_mag = u * torch.exp(w["r_mag"]) + w["b_mag"]
            code = (pi_gate > 0).to(x.dtype) * torch.relu(pi_mag)
            xhat = code @ w["W_dec"] + w["b_dec"]
            gate = torch.relu(pi_gate)
            l1 = self.p["l1_coef"] * gate.sum(dim=1).mean()
            x_aux = gate @ w["W_dec"].detach() + w["b_dec"].detach()
            return half_mse(xhat, x) + l1 + half_mse(x_aux, x), code
        if name == "standard":
            code = torch.relu(self.pre(x))
            xhat = code @ w["W_dec"] + w["b_dec"]
            warm = int(self.p["l1_warm_up_steps"])
            lam = self.p["l1"] * (min(1.0, (self.steps + 1) / warm) if warm > 0 else 1.0)
            norms = torch.linalg.norm(w["W_dec"], dim=1)
            return half_mse(xhat, x) + lam * (code * norms).sum(dim=1).mean(), code
        if name == "mp-sae":
            code = self.pursuit(x)
            return half_mse(code @ w["W_dec"] + w["b_dec"], x), code
        raise AssertionError(name)

    @torch.no_grad()
    def after_step(self, code: torch.Tensor) -> None:
        fired = (code > 0).any(dim=0)
        self.steps += 1
        self.since_fired += code.shape[0]
        self.since_fired[fired] = 0
        if self.name in ("batchtopk", "matryoshka"):
            kept = code[code > 0]
            if kept.numel():
                low = float(kept.min())
                r = float(self.p["threshold_rate"])
                self.theta = low if self.theta is None else (1 - r) * self.theta + r * low

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The inference code (batch-independent)."""
        name, w = self.name, self.w
        if name == "topk":
            z = self.pre(x)
            vals, idx = z.topk(int(self.p["k"]), dim=1)
            return torch.zeros_like(z).scatter(1, idx, torch.relu(vals))
        if name in ("batchtopk", "matryoshka"):
            z = self.pre(x)
            return z * (z > (self.theta or 0.0)).to(z.dtype)
        if name == "jumprelu":
            z = self.pre(x, bool(self.p["pre_bias"]))
            return z * (z > torch.exp(w["log_threshold"])).to(z.dtype)
        if name == "standard":
            return torch.relu(self.pre(x))
        if name == "mp-sae":
            return self.pursuit(x)
        u = (x - w["b_dec"]) @ w["W_enc"].T
        gate = (u + w["b_enc"]) > 0
        return gate.to(x.dtype) * torch.relu(u * torch.exp(w["r_mag"]) + w["b_mag"])

    @torch.no_grad()
    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return code @ self.w["W_dec"] + self.w["b_dec"]

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        w, g = self.w["W_dec"], self.w["W_dec"].grad
        if g is not None:
            unit = w / torch.linalg.norm(w, dim=1, keepdim=True)
            g -= (g * unit).sum(dim=1, keepdim=True) * unit

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        w = self.w["W_dec"]
        w /= torch.linalg.norm(w, dim=1, keepdim=True)


def train(
    name: str,
    data: np.ndarray,
    *,
    hidden: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    params: dict[str, Any] | None = None,
    init_sample: int = 1000,
) -> TorchSAE:
    """Train ``name`` on ``data`` (N×D float32) with Adam; same loop as sparsekit's trainer:
    every epoch a seeded permutation, minibatches of ``batch_size`` rows."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    n, dim = x_all.shape
    rows = np.sort(rng.choice(n, size=min(n, init_sample), replace=False))
    model = TorchSAE(name, dim, hidden, dict(params or {}), generator, x_all[rows])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            x = x_all[torch.from_numpy(np.sort(order[start : start + batch_size]))]
            loss, code = model.loss(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if model.unit_decoder:
                model.project_decoder_grad()
            opt.step()
            if model.unit_decoder:
                model.normalize_decoder()
            model.after_step(code.detach())
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"{name}: the loss diverged ({float(loss.detach())})")
    return model


def measures(model: TorchSAE, test: np.ndarray, batch: int = 4096) -> dict[str, float]:
    """Variance explained (1 − SSE/SST around the mean), L0 (|a| > 1e-3), dead and dense units
    (active for none / more than 10% of the samples) of the inference code on ``test``."""
    x_all = torch.from_numpy(np.ascontiguousarray(test, dtype=np.float32))
    sse, active, counts = 0.0, 0, torch.zeros(model.hidden, dtype=torch.int64)
    for start in range(0, len(x_all), batch):
        x = x_all[start : start + batch]
        code = model.encode(x)
        sse += float((model.decode(code) - x).double().pow(2).sum())
        on = code.abs() > 1e-3
        active += int(on.sum())
        counts += on.sum(dim=0)
    xd = x_all.double()
    sst = float((xd - xd.mean(0)).pow(2).sum())
    n = len(x_all)
    return {
        "fve": 1.0 - sse / sst,
        "l0": active / n,
        "dead_units": int((counts == 0).sum()),
        "dense_units": int((counts > 0.1 * n).sum()),
    }


def _run_job(path: Path) -> None:
    job = json.loads(path.read_text())
    torch.set_num_threads(int(job.get("threads", torch.get_num_threads())))
    train_x = np.load(job["train"], mmap_mode="r")
    test_x = np.load(job["test"], mmap_mode="r")
    start = time.perf_counter()
    model = train(
        job["method"],
        np.asarray(train_x),
        hidden=job["hidden"],
        epochs=job["epochs"],
        batch_size=job["batch_size"],
        lr=job["lr"],
        seed=job["seed"],
        params=job["params"],
    )
    seconds = time.perf_counter() - start
    out = measures(model, np.asarray(test_x))
    out.update(seconds=seconds, torch=torch.__version__, threads=torch.get_num_threads())
    if model.theta is not None:
        out["threshold"] = model.theta
    np.save(job["decoder_out"], model.w["W_dec"].detach().numpy())
    Path(job["result_out"]).write_text(json.dumps(out))


if __name__ == "__main__":
    _run_job(Path(sys.argv[1]))


__all__ = ["DEFAULTS", "TorchSAE", "measures", "train"]
