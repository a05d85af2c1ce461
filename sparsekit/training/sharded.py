"""Latents sharded across ranks: each rank holds H/N latents of one wide top-k dictionary.

For a dictionary too wide for one process (or whose gradients are too large to all-reduce
every step), rank r holds latents ``[H·r/N, H·(r+1)/N)``: their encoder rows, decoder rows,
encoder biases and optimizer state; the decoder bias is replicated. Every rank reads the whole
batch. One step (Gao et al. 2024's sharded top k)::

    Z_r   = X̃ W_enc,rᵀ + b_enc,r                       this rank's latents      B × H/N
    C_r   = the k largest of each row of Z_r           local candidates         B × k
    C     = gather(C_0 … C_{N−1}); the k largest of each row of C: the global top k
    Y     = Σ_r A_r W_dec,r   (all-reduce)  + b_dec    A_r: this rank's winners
    G     = (Y − X)/B                                  the same on every rank
    ∇W_dec,r = A_rᵀ G ;  dZ_r = (G W_dec,rᵀ) at the winners (⊙ f′) ;  ∇W_enc,r = dZ_rᵀ X̃
    ∇b_dec   = Σ_rows G  (− Σ_r (Σ_rows dZ_r) W_enc,r with a pre-encoder bias: all-reduce)

so per step the ranks move the B·D partial reconstructions (one all-reduce), N·B·k candidate
values and indices (one gather) and, with a pre-encoder bias, D more values; data parallel
moves about 2·D·H gradient values instead (``docs/distributed.md``, the cost model). The
optimizer's update is elementwise, so updating each shard alone is the update of the whole.

Supported: ``ksparse`` (tied, linear, its k schedule, centring) and ``topk`` without the AuxK
term and without resampling (``aux_coef=0``); others are refused with one line. Initialisation
draws the whole dictionary from the seed on every rank and keeps the rank's rows, so the
model is the one a single process trains, to float rounding (a tie between candidates goes to
the lower latent index). :func:`train_sharded` is the Python entry point; it returns the whole
model on every rank.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from sparsekit.backend.selection import top_k_indices
from sparsekit.backend.sparse_code import (
    code_times,
    code_transpose_times,
    column_sums,
    gathered_dot,
)
from sparsekit.core.contract import BaseMethod
from sparsekit.core.step import decoder_weights
from sparsekit.errors import DivergenceError, ParameterError
from sparsekit.parallel import Communicator, on_every_rank, share_bounds
from sparsekit.training.metrics import VarianceAccumulator, coherence, fve_from_sums
from sparsekit.training.model import Model
from sparsekit.training.optim import make_optimizer
from sparsekit.training.settings import TRAIN_CONFIG_SETTINGS, resolve_config, split_settings
from sparsekit.training.trainer import Trainer, make_method, world_communicator

#: The methods a sharded step computes, with how: (tied, ReLU on kept values, pre-bias).
SHARDABLE = {"ksparse": (True, False, False), "topk": (False, True, True)}
#: Parameters with one row (or entry) per latent: the ones that are sharded.
SHARDED = ("W_enc", "W_dec", "b_enc")


def sharding_refusal(method: BaseMethod) -> str | None:
    """Why ``method`` cannot train with latents sharded, or ``None``."""
    if method.name not in SHARDABLE:
        return (
            f"{method.name} cannot train with its latents sharded: only "
            f"{', '.join(SHARDABLE)} can"
        )
    if method.name == "topk" and (method.aux_coef > 0 or method.resample_every):
        return (
            "topk with sharded latents needs --aux-coef 0 and no resampling (the AuxK term "
            "and resampling are not sharded)"
        )
    return None


class ShardedStep:
    """One rank's part of the sharded step (see the module docstring)."""

    def __init__(self, trainer: Trainer, comm: Communicator) -> None:
        method, config = trainer.method, trainer.config
        self.trainer, self.comm, self.method = trainer, comm, method
        self.backend = trainer.backend
        self.tied, self.relu, self.pre_bias = SHARDABLE[method.name]
        hidden = config.hidden
        self.start, self.stop = share_bounds(hidden, comm.rank, comm.size)
        if self.stop - self.start < 1:
            raise on_every_rank(
                ParameterError(f"--hidden {hidden} leaves a rank of {comm.size} without latents")
            )
        self.params = {
            name: (value[self.start : self.stop].copy() if name in SHARDED else value)
            for name, value in trainer.params.items()
        }
        self.optimizer = make_optimizer(config.optimizer, config.lr, config.momentum)
        if trainer.optimizer is not None:  # a restored run: this rank's rows of its state
            self.optimizer.load_state_dict(
                {key: self._own(key, value) for key, value in trainer.optimizer.state_dict().items()}
            )
        #: Seconds inside the collectives of the steps (communication and waiting).
        self.seconds = 0.0
        #: Samples each of this rank's latents was among the winners for, this epoch.
        self.active = self.backend.xp.zeros(self.stop - self.start, dtype=self.backend.xp.int64)

    def _own(self, key: str, value: Any) -> Any:
        """This rank's part of the optimizer state entry ``key`` (``m.W_enc``, ``steps``)."""
        name = key.split(".", 1)[-1]
        if isinstance(value, (int, float)) or name not in SHARDED:
            return value
        return value[self.start : self.stop].copy()

    def k(self, training: bool = True) -> int:
        method = self.method
        if method.name == "ksparse":
            return method.current_k if training else int(round(method.alpha * method.k))
        return method.k

    def step(self, x: Any) -> Any:
        """Train on the whole batch ``x`` (every rank the same); returns the loss."""
        backend, xp, params, comm = self.backend, self.backend.xp, self.params, self.comm
        w_enc = params["W_enc"]
        w_dec = w_enc if self.tied else params["W_dec"]
        x_tilde = x - params["b_dec"] if self.pre_bias else x
        z = x_tilde @ w_enc.T
        z += params["b_enc"]
        k = min(self.k(), self.trainer.config.hidden)
        local_k = min(k, z.shape[1])
        idx = top_k_indices(xp, z, local_k)
        values = xp.take_along_axis(z, idx, axis=1)
        won = self._winners(values, idx, k)
        self.active += xp.bincount(
            idx.ravel(), weights=won.ravel(), minlength=self.stop - self.start
        ).astype(self.active.dtype)
        kept = values * won
        if self.relu:
            xp.maximum(kept, 0, out=kept)
        partial = code_times(backend, idx, kept, w_dec)
        y = comm.allreduce_sum(partial)
        y += params["b_dec"]
        batch = x.shape[0]
        g = y - x
        loss = (0.5 / batch) * xp.vdot(g, g)
        g *= 1.0 / batch
        hidden = self.stop - self.start
        d_values = gathered_dot(backend, g, w_dec, idx)
        d_values *= won
        if self.relu:
            d_values *= kept > 0
        grads = {"b_enc": column_sums(backend, idx, d_values, hidden)}
        grad_enc = code_transpose_times(backend, idx, d_values, x_tilde, hidden)
        grad_dec = code_transpose_times(backend, idx, kept, g, hidden)
        b_dec = g.sum(axis=0)
        if self.pre_bias:  # X̃ = X − b_dec: Σ_r (Σ_rows dZ_r) W_enc,r over the ranks
            b_dec -= comm.allreduce_sum(grads["b_enc"] @ w_enc)
        grads["b_dec"] = b_dec
        if self.tied:
            grads["W_enc"] = grad_enc + grad_dec
        else:
            grads["W_enc"], grads["W_dec"] = grad_enc, grad_dec
        upkeep = self.trainer.upkeep
        for name, grad in grads.items():
            upkeep.project(name, grad, params)
        self.optimizer.step(xp, params, grads)
        for name in list(params):
            upkeep.renormalise(name, params)
        return loss

    def _winners(self, values: Any, idx: Any, k: int) -> Any:
        """1 where a local candidate is among its row's global top k (0/1, values' dtype)."""
        xp, comm = self.backend.xp, self.comm
        to_numpy = self.backend.to_numpy
        mine = (to_numpy(values), to_numpy(idx) + self.start)
        gathered = comm.allgather(mine)
        cand = np.concatenate([v for v, _ in gathered], axis=1)
        latent = np.concatenate([i for _, i in gathered], axis=1)
        # The k largest of each row; equal values: the lower latent index first.
        order = np.lexsort((latent, -cand), axis=1)[:, :k]
        rows = np.arange(cand.shape[0])[:, None]
        chosen = np.zeros(cand.shape, dtype=bool)
        chosen[rows, order] = True
        offset = sum(v.shape[1] for v, _ in gathered[: comm.rank])
        own = chosen[:, offset : offset + values.shape[1]]
        return xp.asarray(own.astype(values.dtype))

    def gather_to_root(self) -> None:
        """The whole model and optimizer state, gathered into the trainer on rank 0 (for its
        checkpoint and figures); the other ranks' trainers keep what they had."""
        to_numpy = self.backend.to_numpy
        mine = {
            "params": {n: to_numpy(v) for n, v in self.params.items() if n in SHARDED},
            "optimizer": {
                k: to_numpy(v)
                for k, v in self.optimizer.state_dict().items()
                if not isinstance(v, (int, float)) and k.split(".", 1)[-1] in SHARDED
            },
        }
        gathered = gather(self.comm, mine)
        if gathered is None:
            return
        trainer, asarray = self.trainer, self.backend.asarray
        params = dict(self.params)
        for name in gathered[0]["params"]:
            params[name] = asarray(np.concatenate([g["params"][name] for g in gathered]))
        trainer.params = params
        if trainer.optimizer is not None:
            state = dict(self.optimizer.state_dict())
            for key in gathered[0]["optimizer"]:
                state[key] = asarray(np.concatenate([g["optimizer"][key] for g in gathered]))
            trainer.optimizer.load_state_dict(state)

    def whole(self) -> dict[str, Any]:
        """The whole dictionary, on every rank (the shards gathered in rank order)."""
        gathered = self.comm.allgather(
            {n: self.backend.to_numpy(v) for n, v in self.params.items() if n in SHARDED}
        )
        out = dict(self.params)
        for name in gathered[0]:
            out[name] = self.backend.asarray(np.concatenate([g[name] for g in gathered]))
        return out


def train_sharded(
    method: str | BaseMethod | type[BaseMethod],
    data: Any,
    *,
    comm: Communicator | bool = True,
    registry: Any = None,
    **settings: Any,
) -> Model:
    """Train ``method`` with its latents sharded over the ranks of ``comm`` (MPI's world for
    ``True``); every rank calls it with the same arguments and gets the whole model.

    ``settings`` are :func:`sparsekit.train`'s. Refused with one line for a method or setting
    the sharded step does not compute (:func:`sharding_refusal`).
    """
    config_values, method_params = split_settings(settings, TRAIN_CONFIG_SETTINGS)
    instance = make_method(method, registry, **method_params)
    config = resolve_config(instance, **config_values)
    refused = sharding_refusal(instance)
    if refused:
        raise on_every_rank(ParameterError(refused))
    communicator = world_communicator(comm)
    if communicator is None:
        raise ParameterError("train_sharded needs a communicator (comm=True: MPI's world)")
    trainer = Trainer(instance, data, config)  # the whole initial model, from the seed
    return fit_sharded(trainer, communicator)


class ShardedTrainer(Trainer):
    """A :class:`~sparsekit.training.trainer.Trainer` whose :meth:`fit` trains with the
    latents sharded over ``shards`` (:func:`fit_sharded`): every rank constructs (or restores)
    the whole model, as one process does, and keeps its rows while training."""

    def __init__(self, *args: Any, shards: Communicator, **kwargs: Any) -> None:
        refused = sharding_refusal(args[0] if args else kwargs["method"])
        if refused:  # before any data is read
            raise on_every_rank(ParameterError(refused))
        super().__init__(*args, **kwargs)
        #: The ranks the latents are sharded over (the run directory records their number).
        self.shards = shards

    def fit(self) -> Model:
        return fit_sharded(self, self.shards)


def gather(comm: Communicator, value: Any) -> list[Any] | None:
    """Every rank's ``value`` on rank 0 (``None`` elsewhere): the communicator's ``gather``
    when it has one, else its ``allgather``."""
    if hasattr(comm, "gather"):
        return comm.gather(value)  # type: ignore[no-any-return]
    values = comm.allgather(value)
    return values if comm.rank == 0 else None


def fit_sharded(trainer: Trainer, comm: Communicator) -> Model:
    """Train ``trainer``'s model (as constructed or restored: the whole model on every rank)
    to its last epoch with the latents sharded over ``comm``; returns the whole model, on
    every rank.

    The trainer's callbacks are called as :meth:`Trainer.fit` calls them. After every epoch
    the whole model and optimizer state are gathered into rank 0's trainer (its
    ``params``, ``optimizer``, ``history``), so that a
    :class:`~sparsekit.runs.writer.RunWriter` there checkpoints and draws the whole model;
    the epoch's metrics are those of one process (loss, mse, mean_active, dead_units,
    fve, seconds; coherence on rank 0 only).
    """
    instance, config = trainer.method, trainer.config
    refused = sharding_refusal(instance)
    if refused:
        raise on_every_rank(ParameterError(refused))
    sharded = ShardedStep(trainer, comm)
    for cb in trainer.callbacks:
        cb.on_train_begin(trainer)
    while trainer.epoch < config.epochs and not trainer.stop_requested:  # (between epochs)
        metrics = _sharded_epoch(trainer, sharded)
        sharded.gather_to_root()
        if comm.rank == 0:
            metrics["coherence"] = coherence(
                decoder_weights(trainer.params), xp=trainer.backend.xp
            )
        metrics.update(instance.epoch_metrics())
        trainer.history.append(metrics)
        for cb in trainer.callbacks:
            cb.on_epoch_end(trainer, metrics)
    trainer.params = sharded.whole()
    for cb in trainer.callbacks:
        cb.on_train_end(trainer)
    return trainer.model


def _sharded_epoch(trainer: Trainer, sharded: ShardedStep) -> dict[str, Any]:
    """One epoch of sharded steps; its metrics (all but the coherence), the same on every
    rank. Advances ``trainer.epoch``."""
    instance, config, backend = trainer.method, trainer.config, trainer.backend
    xp = backend.xp
    instance.on_epoch_start(trainer.epoch, config.epochs)
    for cb in trainer.callbacks:
        cb.on_epoch_begin(trainer, trainer.epoch)
    steps = trainer.batches.start_epoch()
    total = xp.zeros((), dtype=backend.dtype)
    variance = VarianceAccumulator(xp) if trainer._data_sst is None else None
    sharded.active[...] = 0
    start = time.perf_counter()
    for step in range(steps):
        x = backend.asarray(trainer.batches.batch(step, backend.dtype))
        if trainer.input_mean is not None:
            x -= trainer.input_mean
        total += sharded.step(x) * x.shape[0]
        if variance is not None:
            variance.add(x)
        for cb in trainer.callbacks:
            cb.on_step_end(trainer, step + 1, steps)
    backend.synchronize()
    seconds = time.perf_counter() - start
    n, dim = len(trainer.dataset), trainer.dataset.dim
    loss = float(total) / n
    if not np.isfinite(loss):
        raise DivergenceError(
            f"training diverged at epoch {trainer.epoch + 1}: loss is {loss} (try a smaller "
            "learning rate)"
        )
    if variance is not None:
        trainer._data_variance, trainer._data_sst = variance, variance.sst
    counts = np.concatenate(sharded.comm.allgather(backend.to_numpy(sharded.active)))
    trainer.epoch += 1
    return {
        "epoch": trainer.epoch,
        "loss": loss,
        "mse": 2.0 * loss / dim,  # the loss is the reconstruction term alone
        "mean_active": float(counts.sum()) / n,
        "dead_units": int((counts == 0).sum()),
        "seconds": seconds,
        "fve": fve_from_sums(2.0 * loss * n, trainer._data_sst),
    }
