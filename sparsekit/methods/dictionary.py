"""Online dictionary learning of Mairal, Bach, Ponce & Sapiro (ICML 2009).

"Online Dictionary Learning for Sparse Coding" (and JMLR 11, 2010, "Online Learning for
Matrix Factorization and Sparse Coding"); what scikit-learn's
``MiniBatchDictionaryLearning`` does. The dictionary D (H×D, atoms as rows) is the tied
weight ``W_enc``; there is no encoder: the code of a batch is the output of a sparse coder
(:mod:`sparsekit.coders`) run against the current dictionary::

    Z  = coder(X − b_dec; D)          ista / fista / cd: argmin ½‖x − zD‖² + α‖z‖₁ per row
                                      omp: the best k atoms per row
    X̂  = Z D + b_dec

For each minibatch (B rows) the update accumulates the sufficient statistics with a
forgetting factor β and makes one pass of block-coordinate descent over the atoms::

    A ← βA + ZᵀZ / B                  (H×H)
    B ← βB + Zᵀ(X − b_dec) / B        (H×D)
    for j = 1..H:  d_j ← d_j + (b_j − a_j D) / A_jj ;  d_j ← d_j / max(‖d_j‖, 1)

(the projection is onto the unit ball, as in the paper and scikit-learn; atoms in use end at
norm 1). β follows Mairal et al.'s schedule (scikit-learn's) unless ``--forgetting`` sets a
constant: at step t (from 0) with batch size B, θ = (t + 1)B while t < B − 1, else
θ = B² + t + 1 − B, and β = (θ + 1 − B)/(θ + 1). A and B are method state (in the
checkpoint), so ``--resume`` continues exactly.

**Dead atoms.** An atom whose A_jj is below 10⁻⁶ of the mean of A's diagonal (no code of the
recent batches used it) is re-initialised, in the same pass, to the worst-coded sample of
the batch, normalised (the sample x − b_dec with the largest ‖x − x̂‖; the second-worst for
the second dead atom, and so on, cycling through the batch). scikit-learn draws a random
sample instead; the worst-coded one is what the dictionary lacks most. No host read decides
it: the choice is arithmetic on the device, so the update stays one GPU stream.

**The gradient that is checked.** Training is not a gradient step, and the code is an
optimiser's output, not a differentiable function of D. What :meth:`loss_and_grads` returns
(and ``sparsekit gradcheck dict-learning`` compares with finite differences) is the gradient
of the objective with the code held fixed at the coder's output for the unperturbed
dictionary (a declared stop-gradient)::

    L(D, b_dec) = (1/2B)‖X − Z D − b_dec‖² + (α/B)‖Z‖₁
    ∂L/∂D = −(1/B) Zᵀ R,   ∂L/∂b_dec = −(1/B) Σ_rows R,   R = X − X̂,   ∂L/∂b_enc = 0

For the L1 coders this is also the envelope-theorem gradient of min_Z L (Z optimal), the
quantity the block-coordinate update decreases. ``b_enc`` is unused (kept so the model has
the house's four parameters); ``b_dec`` stays at its initial zero (the update does not
move it; centre the data with ``--center`` instead).

The codes need not be exact while the dictionary is learned: by default the coder stops each
row at a relative change of 1e-2 and after 50 iterations (scikit-learn codes every batch with
LARS, exactly). On patches and MNIST this reaches a given held-out objective sooner than
exact codes do (``bench/dict_learning.py``, ``docs/coders.md``); ``--tol`` and
``--max-iter`` trade it back.

On a GPU the coder runs exactly ``--max-iter`` iterations (a tolerance check would read a
flag back every iteration); on the CPU it stops each row at ``--tol`` (``--tol 0``: exactly
``--max-iter`` there too, the same arithmetic as the GPU's).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsekit.backend.threads import matmul
from sparsekit.coders import coordinate_descent, fista, ista, lipschitz, omp
from sparsekit.errors import ParameterError
from sparsekit.methods import (
    IDENTITY,
    Forward,
    ObjectiveUpdateMethod,
    Param,
    StepResult,
    StepState,
    between_one_and_hidden,
    hookimpl,
    non_negative,
)

CODERS = ("fista", "ista", "omp", "cd")

#: An atom is dead when its A_jj is below this fraction of the mean of A's diagonal.
DEAD_FRACTION = 1e-6


def _coder_choice(value: str, _size: Any) -> str | None:
    return None if value in CODERS else f"must be one of {', '.join(CODERS)}, got {value!r}"


def _forgetting_check(value: float, _size: Any) -> str | None:
    if 0 <= value <= 1:
        return None
    return f"must be 0 (Mairal et al.'s schedule) or a factor in (0, 1], got {value}"


def _at_least_one(value: int, _size: Any) -> str | None:
    return None if value >= 1 else f"must be >= 1, got {value}"


def forgetting_factor(step: int, batch: int) -> float:
    """β of Mairal et al.'s schedule at update ``step`` (from 0) for batches of ``batch``."""
    theta = (step + 1) * batch if step < batch - 1 else batch * batch + step + 1 - batch
    return (theta + 1 - batch) / (theta + 1)


class DictionaryLearning(ObjectiveUpdateMethod):
    name = "dict-learning"
    description = (
        "Online dictionary learning: codes from ISTA/FISTA/OMP, atoms by block-coordinate "
        "descent (Mairal et al.)."
    )
    citation = (
        "Mairal, Bach, Ponce & Sapiro, 'Online Dictionary Learning for Sparse Coding', ICML 2009"
    )
    params = (
        Param(
            "coder",
            str,
            "fista",
            "the sparse coder: fista, ista, omp or cd (coordinate descent, CPU)",
            _coder_choice,
        ),
        Param(
            "alpha", float, 1.0, "L1 weight α of ½‖x − zD‖² + α‖z‖₁ (ista, fista, cd)", non_negative
        ),
        Param("k", int, 5, "atoms per sample (omp)", between_one_and_hidden),
        Param(
            "forgetting",
            float,
            0.0,
            "forgetting factor β of A and B; 0: Mairal et al.'s schedule",
            _forgetting_check,
        ),
        Param(
            "max_iter", int, 50, "iteration cap of ista / fista (full sweeps of cd)", _at_least_one
        ),
        Param(
            "tol",
            float,
            1e-2,
            "ista / fista: a row stops when its code changes by less than this (relative); "
            "cd: when no coordinate's KKT violation exceeds this times α + max|xDᵀ|; "
            "0: always --max-iter iterations",
            non_negative,
        ),
    )
    tied = True
    allows_untied = False
    training_defaults = {"hidden": 256, "batch_size": 256, "epochs": 5, "lr": 1.0}
    output_activation = IDENTITY
    stop_gradients = {
        "code": "the coder's output, computed for the unperturbed dictionary and held fixed"
    }
    # batch_reduction stays undeclared: A and B are row means that would reduce, but a dead
    # atom restarts at the global batch's worst-coded sample, which one rank cannot see.
    distributed_refusal = (
        "a dead atom restarts at the worst-coded sample of the whole batch, which one rank "
        "does not see; train it in one process"
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._a: Any = None  # A, H×H
        self._b: Any = None  # B, H×D
        self.steps = 0

    # -- model ---------------------------------------------------------------------------

    def init_params(self, rng, dim, hidden, tied, sample):
        """Atoms drawn from the data (normalised samples, as scikit-learn's random init),
        random unit vectors when there is no sample."""
        if sample is not None and len(sample) > 0:
            rows = rng.choice(len(sample), size=hidden, replace=len(sample) < hidden)
            atoms = np.asarray(sample[rows], dtype=np.float64)
            atoms = atoms + 1e-3 * rng.standard_normal((hidden, dim))
        else:
            atoms = rng.standard_normal((hidden, dim))
        atoms /= np.maximum(np.linalg.norm(atoms, axis=1, keepdims=True), 1e-12)
        return {"W_enc": atoms, "b_enc": np.zeros(hidden), "b_dec": np.zeros(dim)}

    def code(self, backend: Any, dictionary: Any, x: Any, training: bool = True) -> Any:
        """The coder's codes of ``x`` (B×D, b_dec already removed) on ``dictionary``.

        While training, ISTA/FISTA codes stay loose (``--tol``, no exact finish): the
        dictionary update needs no exact codes and reaches a given objective sooner without
        (docs/coders.md). Encoding a trained model (``training`` false) adds the exact
        active-set finish on the CPU (:mod:`sparsekit.coders.l1`)."""
        if self.coder == "omp":
            return omp(x, dictionary, self.k)
        gram = matmul(dictionary, dictionary.T)
        if self.coder == "cd":
            if backend.is_gpu:
                raise ParameterError(
                    "dict-learning: --coder cd runs on the CPU (one coordinate at a time: "
                    "thousands of kernel launches a batch on a GPU); use --coder fista with --gpu"
                )
            return coordinate_descent(
                x,
                dictionary,
                self.alpha,
                max_iter=self.max_iter,
                tol=self.tol,
                gram=gram,
                polish=not training,
            ).codes
        solve = fista if self.coder == "fista" else ista
        result = solve(
            x,
            dictionary,
            self.alpha,
            max_iter=self.max_iter,
            tol=0.0 if backend.is_gpu else self.tol,
            gram=gram,
            lipschitz_constant=lipschitz(dictionary, gram=gram),
            polish=not training,
        )
        return result.codes

    def forward(self, backend, params, x, training):
        dictionary = params["W_enc"]
        centred = x - params["b_dec"]
        code = self.code(backend, dictionary, centred, training)
        xhat = matmul(code, dictionary)
        xhat += params["b_dec"]
        return Forward(code, code, None, code, None, xhat, xhat)

    def _objective(self, backend, params, x, code):
        """``(loss, gradients, forward, reconstruction)`` with ``code`` held fixed."""
        xp = backend.xp
        batch = x.shape[0]
        dictionary = params["W_enc"]
        xhat = matmul(code, dictionary)
        xhat += params["b_dec"]
        residual = x - xhat
        reconstruction = (0.5 / batch) * xp.vdot(residual, residual)
        loss = reconstruction
        if self.coder != "omp":
            loss = loss + (self.alpha / batch) * xp.abs(code).sum()
        grads = {
            "W_enc": matmul(code.T, residual) * (-1.0 / batch),
            "b_enc": xp.zeros_like(params["b_enc"]),
            "b_dec": residual.sum(axis=0) * (-1.0 / batch),
        }
        return loss, grads, Forward(code, code, None, code, None, xhat, xhat), reconstruction

    def loss_and_grads(self, backend, params, x, state: StepState, term=None):
        fwd = self.forward(backend, params, x, True)
        return self._objective(backend, params, x, fwd.code)

    def anchored_loss(self, backend, params, x, state, anchor, term=None):
        code = self.forward(backend, anchor, x, True).code  # the stopped quantity
        return self._objective(backend, params, x, code)[0]

    # -- the update ----------------------------------------------------------------------

    def update(self, backend, params, x, lr):
        """One minibatch: code it, accumulate A and B, one block-coordinate pass (module
        docstring). ``lr`` is not used: the step of each atom is 1/A_jj."""
        xp = backend.xp
        batch = x.shape[0]
        dictionary = params["W_enc"]
        fwd = self.forward(backend, params, x, True)
        code = fwd.code
        centred = x - params["b_dec"]
        residual = x - fwd.xhat
        reconstruction = (0.5 / batch) * xp.vdot(residual, residual)
        loss = reconstruction
        if self.coder != "omp":
            loss = loss + (self.alpha / batch) * xp.abs(code).sum()

        beta = self.forgetting or forgetting_factor(self.steps, batch)
        a_new = matmul(code.T, code) * (1.0 / batch)
        b_new = matmul(code.T, centred) * (1.0 / batch)
        if self._a is None:
            self._a, self._b = a_new, b_new
        else:
            self._a = xp.asarray(self._a, dtype=a_new.dtype) * beta + a_new
            self._b = xp.asarray(self._b, dtype=b_new.dtype) * beta + b_new
        self.steps += 1
        block_coordinate_pass(xp, dictionary, self._a, self._b, centred, residual)
        return StepResult(loss, reconstruction, fwd)

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"steps": self.steps}
        if self._a is not None:
            state["A"], state["B"] = self._a, self._b
        return state

    def load_state_dict(self, state) -> None:
        self.steps = int(state.get("steps", 0))
        self._a = state.get("A")
        self._b = state.get("B")


def block_coordinate_pass(
    xp: Any, dictionary: Any, a: Any, b: Any, samples: Any, residual: Any
) -> None:
    """One pass of d_j ← Π(d_j + (b_j − a_j D)/A_jj) over the atoms, in place, with the dead
    atoms (A_jj < DEAD_FRACTION · mean A_jj) set to the batch's worst-coded ``samples``
    (largest ‖``residual``‖ first), normalised."""
    hidden = dictionary.shape[0]
    diag = xp.einsum("hh->h", a)
    dead = diag < DEAD_FRACTION * diag.mean()
    safe = xp.where(dead, 1, diag)
    # The worst-coded samples, worst first; the i-th dead atom takes the i-th (cycling).
    errors = xp.einsum("bd,bd->b", residual, residual)
    worst = (-errors).argsort()
    rank = (dead.cumsum() - 1) % residual.shape[0]
    fresh = samples[worst[rank]]
    fresh /= xp.maximum(xp.sqrt(xp.einsum("hd,hd->h", fresh, fresh)), 1e-12)[:, None]
    for j in range(hidden):
        atom = dictionary[j] + (b[j] - a[j] @ dictionary) / safe[j]
        atom /= xp.maximum(xp.sqrt(xp.vdot(atom, atom)), 1)
        dictionary[j] = xp.where(dead[j], fresh[j], atom)


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(DictionaryLearning)
