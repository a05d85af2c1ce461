"""What the trainer maintains around the gradient step for a method that asks for it.

A method declares an :class:`~sparsekit.core.contract.Upkeep` (``Method.upkeep()``); the
trainer's :class:`Upkeeper` then, for any method:

* **unit-norm decoder** – normalises the decoder rows at initialisation; before each
  optimizer step removes from each row's gradient its component along the row,
  g_j ← g_j − (d̂_j·g_j) d̂_j (the exact gradient of the reparametrisation d = v/‖v‖ at
  ‖v‖ = 1); after the step renormalises the rows (Adam's per-coordinate scaling puts a radial
  part back).
* **b_dec from the data** – the mean or the geometric median (Weiszfeld) of the trainer's
  initial data sample.
* **dead units** – counts, per unit, training samples since it last fired (code value > 0);
  units at ``dead_after`` or more are dead. The mask goes to the method's objective
  (:class:`~sparsekit.core.contract.StepState`, e.g. for AuxK). The AuxK methods' default
  window, the paper's 10M samples, is capped at a tenth of the samples the run sees
  (:func:`dead_window`); a window the run cannot reach gets a one-line warning.
* **resampling** – every ``resample_every`` optimizer steps, each dead unit j is
  re-initialised from an input of the current batch drawn with probability proportional to
  its squared reconstruction error ‖x − x̂‖² (Bricken et al. 2023): decoder row
  d_j = (x − b_dec)/‖x − b_dec‖, encoder row 0.2·(mean live encoder row norm)·d_j, b_enc[j] = 0;
  the optimizer's moments of every per-unit entry of j are zeroed (W_enc, W_dec and b_enc
  rows, and the method's ``unit_params``) and its dead counter restarts.

All of it (counters, the resampling generator, the step count) is in :meth:`state_dict`, which
checkpoints store, so a resumed run is exact.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np

from sparsekit.backend import Backend, sparse_code
from sparsekit.backend.selection import run_pass_blocks
from sparsekit.core.contract import Method, StepState, TopK, Upkeep
from sparsekit.core.step import Forward
from sparsekit.methods._sae import PAPER_DEAD_AFTER

#: The default window as a share of the run: a unit silent for a tenth of the run (one
#: epoch of ten) is dead. Gao et al.'s 10M tokens are a far smaller share of their runs.
DEAD_SHARE_OF_RUN = 10

#: Scale of a resampled encoder row relative to the mean live encoder row norm.
RESAMPLE_ENCODER_SCALE = 0.2


def geometric_median(x: np.ndarray, iterations: int = 100, tol: float = 1e-5) -> np.ndarray:
    """The geometric median of the rows of ``x`` by Weiszfeld's iterations (float64).

    Starts at the mean; each step averages the rows weighted by 1/distance (distances floored
    at 1e-12); stops after ``iterations`` or when the estimate moves by less than
    ``tol·(‖estimate‖ + 1)``.
    """
    x = np.asarray(x, dtype=np.float64)
    median = x.mean(axis=0)
    for _ in range(iterations):
        weights = 1.0 / np.maximum(np.linalg.norm(x - median, axis=1), 1e-12)
        new = weights @ x / weights.sum()
        moved = float(np.linalg.norm(new - median))
        median = new
        if moved <= tol * (float(np.linalg.norm(median)) + 1.0):
            break
    return median


def fired_units(backend: Backend, fwd: Forward, hidden: int) -> Any:
    """Boolean (H,) backend array: the units with a code value > 0 in this batch.

    No boolean-mask indexing (its size would be read back from a GPU: a synchronisation).
    """
    if isinstance(fwd.support, TopK):
        return sparse_code.fired_units(backend, fwd.support.indices, fwd.code_values, hidden)
    return (fwd.code > 0).any(axis=0)


def dead_window(upkeep: Upkeep, name: str, run_samples: int | None) -> Upkeep:
    """``upkeep`` with a dead-unit window the run of ``run_samples`` samples can reach.

    The paper's default (:data:`PAPER_DEAD_AFTER`, which the AuxK methods declare) becomes
    at most a tenth of the run: with 10M on 225,000 samples no unit could ever count as
    dead, so AuxK would never run. Any other window at or above the run's samples is the
    user's choice, kept, with a one-line warning that it cannot take effect. (A user who
    sets exactly 10,000,000 gets the default's treatment: the value is all there is.)
    """
    after = upkeep.dead_after
    if not after or run_samples is None:
        return upkeep
    if after == PAPER_DEAD_AFTER:
        return replace(upkeep, dead_after=max(1, min(after, run_samples // DEAD_SHARE_OF_RUN)))
    if after >= run_samples:
        warnings.warn(
            f"{name}: --dead-after {after} is not less than the {run_samples} samples this run "
            "sees (epochs x rows): no unit can count as dead, so AuxK and resampling never run",
            UserWarning,
            stacklevel=3,
        )
    return upkeep


class Upkeeper:
    """Applies one method's :class:`Upkeep` in a trainer (see the module docstring).

    ``run_samples`` (epochs × training rows) fits the dead-unit window to the run
    (:func:`dead_window`); ``None`` keeps the declared one.
    """

    def __init__(
        self,
        upkeep: Upkeep,
        method: Method,
        backend: Backend,
        hidden: int,
        seed: int,
        *,
        run_samples: int | None = None,
    ) -> None:
        self.upkeep = dead_window(upkeep, method.name, run_samples)
        self.method = method
        self.backend = backend
        self.hidden = hidden
        self.steps = 0
        self.resampled = 0
        self.rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
        self.since_fired = (
            backend.xp.zeros(hidden, dtype=backend.xp.int64) if self.upkeep.dead_after else None
        )

    @property
    def active(self) -> bool:
        return self.upkeep != Upkeep()

    # -- initialisation ------------------------------------------------------------------------

    def init_params(self, params: dict[str, np.ndarray], sample: np.ndarray) -> dict[str, Any]:
        """Apply b_dec's data initialisation and the unit-norm rows to float64 NumPy params."""
        if self.upkeep.b_dec_init == "mean":
            params["b_dec"] = np.asarray(sample, dtype=np.float64).mean(axis=0)
        elif self.upkeep.b_dec_init == "geometric_median":
            params["b_dec"] = geometric_median(sample)
        if self.upkeep.unit_norm_decoder:
            name = decoder_name(params)
            rows = np.asarray(params[name], dtype=np.float64)
            params[name] = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        return params

    # -- around each step --------------------------------------------------------------------

    def step_state(self) -> StepState:
        """The dead mask (or None) for this step's objective."""
        if self.since_fired is None:
            return StepState()
        return StepState(dead=self.since_fired >= self.upkeep.dead_after)

    def project(self, name: str, grad: Any, params: dict[str, Any]) -> None:
        """Remove from the decoder's gradient (in place) each row's part along its row."""
        if not self.upkeep.unit_norm_decoder or name != decoder_name(params):
            return
        rows = params[name]

        def block(lo: int, hi: int) -> None:
            w, g = rows[lo:hi], grad[lo:hi]
            along = (g * w).sum(axis=1) / (w * w).sum(axis=1)
            g -= along[:, None] * w

        run_pass_blocks(self.backend.xp, rows.shape[0], rows[:1].nbytes, block)

    def renormalise(self, name: str, params: dict[str, Any]) -> None:
        """Decoder rows back to unit norm after the optimizer moved ``params[name]``."""
        if not self.upkeep.unit_norm_decoder or name != decoder_name(params):
            return
        rows = params[name]
        xp = self.backend.xp

        def block(lo: int, hi: int) -> None:
            w = rows[lo:hi]
            w /= xp.sqrt((w * w).sum(axis=1))[:, None]

        run_pass_blocks(xp, rows.shape[0], rows[:1].nbytes, block)

    def after_step(self, params: dict[str, Any], x: Any, fwd: Forward, optimizer: Any) -> None:
        """Count firings of this batch, and resample dead units when it is time."""
        if self.count_step(x, fwd):
            self.resample(params, x, fwd, optimizer)

    def count_step(
        self, x: Any, fwd: Forward, rows: int | None = None, sum_ranks: Any = None
    ) -> bool:
        """Count one step and the firings of its batch (on the device, no host transfer);
        whether it is time to :meth:`resample` (which reads the device: the trainer calls it
        after the step). Under data parallelism ``rows`` is the global batch's size and
        ``sum_ranks`` sums an array over the ranks: a unit fired if it fired on any rank."""
        self.steps += 1
        if self.since_fired is None:
            return False
        fired = fired_units(self.backend, fwd, self.hidden)
        if sum_ranks is not None:
            fired = sum_ranks(fired.astype(self.backend.xp.int32)) > 0
        self.since_fired += x.shape[0] if rows is None else rows
        self.since_fired *= ~fired  # 0 where the unit fired
        every = self.upkeep.resample_every
        return bool(every) and self.steps % every == 0

    def resample(self, params: dict[str, Any], x: Any, fwd: Forward, optimizer: Any) -> int:
        """Re-initialise the dead units from badly reconstructed rows of ``x``; their count."""
        backend, xp = self.backend, self.backend.xp
        dead = backend.to_numpy(self.since_fired >= self.upkeep.dead_after)
        units = np.flatnonzero(dead)
        if units.size == 0:
            return 0
        error = backend.to_numpy(((fwd.xhat - x) ** 2).sum(axis=1)).astype(np.float64)
        total = error.sum()
        p = error / total if total > 0 else None
        rows = self.rng.choice(x.shape[0], size=units.size, replace=True, p=p)
        picked = backend.to_numpy(x[xp.asarray(rows)] - params["b_dec"]).astype(np.float64)
        norms = np.linalg.norm(picked, axis=1, keepdims=True)
        directions = picked / np.where(norms > 0, norms, 1.0)
        w_enc = params["W_enc"]
        alive = ~dead
        live_norm = (
            float(backend.to_numpy(xp.sqrt((w_enc[xp.asarray(alive)] ** 2).sum(axis=1))).mean())
            if alive.any()
            else 1.0
        )
        dtype = w_enc.dtype
        sel = xp.asarray(units)
        w_enc[sel] = backend.asarray(
            (RESAMPLE_ENCODER_SCALE * live_norm * directions).astype(dtype)
        )
        if "W_dec" in params:
            params["W_dec"][sel] = backend.asarray(directions.astype(dtype))
        params["b_enc"][sel] = 0
        if optimizer is not None:
            names = ["W_enc", "b_enc", *(["W_dec"] if "W_dec" in params else [])]
            for name in (*names, *self.method.unit_params):
                optimizer.reset_rows(name, sel)
        self.since_fired[sel] = 0
        self.resampled += int(units.size)
        return int(units.size)

    # -- checkpoints -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Counters as arrays, the rest JSON-friendly (the generator's state is a dict)."""
        state: dict[str, Any] = {
            "steps": self.steps,
            "resampled": self.resampled,
            "rng": self.rng.bit_generator.state,
        }
        if self.since_fired is not None:
            state["since_fired"] = self.backend.to_numpy(self.since_fired)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.steps = int(state.get("steps", 0))
        self.resampled = int(state.get("resampled", 0))
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]
        if self.since_fired is not None and "since_fired" in state:
            self.since_fired = self.backend.xp.asarray(
                np.asarray(state["since_fired"], dtype=np.int64)
            )


def decoder_name(params: dict[str, Any]) -> str:
    """The parameter holding the decoder rows: W_dec, or W_enc when tied."""
    return "W_dec" if "W_dec" in params else "W_enc"
