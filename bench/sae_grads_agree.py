"""sparsekit's hand-written gradients of ``standard`` and ``mp-sae`` against PyTorch autograd
through the reference models of ``bench/sae_torch.py`` (float64, one batch, same parameters).

    /work/bench-venv/bin/python bench/sae_grads_agree.py     # any Python with torch

For ``mp-sae`` the reference is SAELens' way of training the pursuit (selections under
``no_grad``, coefficients and residuals under autograd), so agreement means sparsekit's
gradient is the one SAELens trains with. Prints each gradient's largest difference relative
to the reference's largest entry; exits 1 above 1e-10.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import sae_torch  # noqa: E402

from sparsekit import get_backend  # noqa: E402
from sparsekit.core.declarations import StepState  # noqa: E402
from sparsekit.methods.mp_sae import MatchingPursuitSAE  # noqa: E402
from sparsekit.methods.standard import StandardSAE  # noqa: E402


def compare(name: str, params: dict, batch: int = 64, dim: int = 16, hidden: int = 40) -> float:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, dim))
    ref = sae_torch.TorchSAE(name, dim, hidden, params, torch.Generator().manual_seed(0),
                             torch.from_numpy(x))  # fmt: skip
    ref.w = {k: v.detach().double() for k, v in ref.w.items()}
    ref.w["b_dec"] = torch.from_numpy(0.1 * rng.standard_normal(dim))
    if name == "standard":  # free decoder norms, an encoder of its own
        ref.w["W_dec"] = ref.w["W_dec"] * torch.from_numpy(rng.uniform(1, 20, (hidden, 1)))
        ref.w["W_enc"] = torch.from_numpy(rng.standard_normal((hidden, dim)))
    for v in ref.w.values():
        v.requires_grad_(True)
    loss, _ = ref.loss(torch.from_numpy(x))
    loss.backward()
    theirs = {k: v.grad.numpy() for k, v in ref.w.items()}
    ours_params = {k: v.detach().numpy().copy() for k, v in ref.w.items()}
    if name == "mp-sae":  # the dictionary is sparsekit's W_enc (tied)
        ours_params = {"W_enc": ours_params["W_dec"], "b_enc": np.zeros(hidden),
                       "b_dec": ours_params["b_dec"]}  # fmt: skip
        theirs = {"W_enc": theirs["W_dec"], "b_dec": theirs["b_dec"]}
        method = MatchingPursuitSAE(**params)
    else:
        method = StandardSAE(**params)
    value, grads, _, _ = method.loss_and_grads(
        get_backend(dtype="float64"), ours_params, x, StepState()
    )
    worst = 0.0
    print(f"{name}: loss {float(value):.12g} (PyTorch {float(loss.detach()):.12g})")
    for key, g in theirs.items():
        err = float(np.abs(grads[key] - g).max() / max(np.abs(g).max(), 1e-300))
        worst = max(worst, err)
        print(f"  d/d{key}: relative difference {err:.2e}")
    return worst


def main() -> int:
    torch.set_default_dtype(torch.float64)
    worst = max(compare("standard", {"l1": 0.3}), compare("mp-sae", {"k": 12}))
    return 0 if worst < 1e-10 else 1


if __name__ == "__main__":
    sys.exit(main())
