"""The one trainer every method uses: minibatches, seeded shuffling, hand-written backprop.

:class:`Trainer` holds everything a run needs (parameters, optimizer, random generators, the
epoch counter) and can save and restore all of it, so a resumed run is exact. :func:`train`
is the one-call library entry point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from sparsekit.backend import Backend, get_backend
from sparsekit.backend.counting import count_active
from sparsekit.backend.process import own_threads
from sparsekit.core import step as autoencoder
from sparsekit.core.contract import BaseMethod, TopK, check_method_class
from sparsekit.core.step import decoder_weights
from sparsekit.data.dataset import ArrayDataset, Dataset
from sparsekit.errors import DataError, DivergenceError, ParameterError
from sparsekit.methods.registry import load_registry
from sparsekit.parallel import Communicator, MPICommunicator, on_every_rank
from sparsekit.training.batches import plan_for
from sparsekit.training.distributed import DataParallel, refusal
from sparsekit.training.metrics import VarianceAccumulator, coherence, fve_from_sums
from sparsekit.training.model import Model
from sparsekit.training.optim import Optimizer, make_optimizer
from sparsekit.training.settings import (
    TRAIN_CONFIG_SETTINGS,
    TrainConfig,
    resolve_config,
    settings_signature,
    split_settings,
)
from sparsekit.training.upkeep import Upkeeper

#: A code entry with |h| above this counts as active (for L0 and dead units).
ACTIVE_THRESHOLD = 1e-3
#: Rows drawn for data-dependent initialisation.
INIT_SAMPLE = 1000


class Callback:
    """Hooks into training. Override what you need; each receives the :class:`Trainer`."""

    def on_train_begin(self, trainer: Trainer) -> None: ...

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None: ...

    def on_step_end(self, trainer: Trainer, step: int, steps: int) -> None: ...

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...


def as_dataset(data: Any) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if not hasattr(data, "shape"):
        try:
            data = np.asarray(data)
        except Exception as exc:
            raise DataError(f"cannot use {type(data).__name__} as training data: {exc}") from None
    dataset = ArrayDataset(data, name="array")
    if isinstance(data, np.ndarray) and data.dtype.kind == "f":
        # NaN/inf in the data would look like divergence later: name the row now.
        flat = data.reshape(len(data), -1)
        for start in range(0, len(flat), 4096):
            finite = np.isfinite(flat[start : start + 4096]).all(axis=1)
            if not finite.all():
                row = start + int(np.flatnonzero(~finite)[0])
                raise DataError(f"array: row {row} contains NaN or infinite values")
    return dataset


class _EpochSums:
    """What an epoch adds up step by step, on the backend's device: the loss and the
    reconstruction term (each times the batch size), each unit's active count and, in the
    first epoch, the data's variance (every full epoch sees the same rows, so the SST around
    the data mean for "fve" is accumulated once and reused after)."""

    def __init__(self, backend: Backend, hidden: int, first: bool) -> None:
        xp = backend.xp
        self.xp, self.hidden = xp, hidden
        self.loss_sum = xp.zeros((), dtype=backend.dtype)
        self.rec_sum = xp.zeros((), dtype=backend.dtype)
        self.active_per_unit = xp.zeros(hidden, dtype=xp.int64)
        self.variance = VarianceAccumulator(xp) if first else None

    def add(
        self, x: Any, loss: Any, rec: Any, fwd: autoencoder.Forward, rows: int | None = None
    ) -> None:
        """One step's batch ``x``, loss, reconstruction term and forward pass (``rows``: the
        global batch's size when the loss is the global batch's, under data parallelism)."""
        batch = x.shape[0] if rows is None else rows
        self.loss_sum += loss * batch
        self.rec_sum += rec * batch
        add_active_counts(self.xp, self.active_per_unit, fwd, self.hidden)
        if self.variance is not None:
            self.variance.add(x)


class Trainer:
    """Trains ``method`` on ``data`` with ``config``.

    After construction ``trainer.params`` holds the initial parameters; :meth:`fit` runs
    the remaining epochs (all of them, or those after a restored checkpoint) and returns the
    :class:`~sparsekit.training.model.Model`. ``trainer.history`` lists the metrics of every epoch.

    ``comm`` (a :class:`~sparsekit.parallel.Communicator`) trains data-parallel: this process
    is one rank of ``comm.size`` that train one model together, each reading its share of
    every batch (:mod:`sparsekit.training.distributed`); ``check_replicas`` then compares a
    checksum of the weights across ranks after every epoch.
    """

    def __init__(
        self,
        method: BaseMethod,
        data: Any,
        config: TrainConfig,
        *,
        callbacks: Sequence[Callback] = (),
        backend: Backend | None = None,
        comm: Communicator | None = None,
        check_replicas: bool = False,
    ) -> None:
        check_method_class(type(method))  # never train a class as something it does not say
        config.validate(method)
        if comm is not None:  # before any data is read
            refused = refusal(method, method.upkeep())
            if refused:
                raise on_every_rank(ParameterError(refused))
        self.method = method
        self.config = config
        self.dataset = as_dataset(data)
        self.callbacks = list(callbacks)
        self.backend = backend or get_backend(config.gpu, config.dtype, config.matmul_precision)
        if self.backend.matmul_precision != config.matmul_precision:
            raise ParameterError(
                f"the backend's matmul precision is {self.backend.matmul_precision}, the "
                f"config's {config.matmul_precision}: give both the same"
            )
        #: Data-parallel training (None: one process).
        self.parallel = (
            None
            if comm is None
            else DataParallel(comm, self.backend, check_replicas=check_replicas)
        )
        n, dim = len(self.dataset), self.dataset.dim
        method.validate(config.hidden, dim)
        if n < 1:
            raise DataError(f"{self.dataset.name}: no samples to train on")
        init_seed, shuffle_seed = np.random.SeedSequence(config.seed).spawn(2)
        init_rng = np.random.default_rng(init_seed)
        self.shuffle_rng = np.random.default_rng(shuffle_seed)
        #: Each epoch's minibatches (see sparsekit.training.batches).
        share = (0, 1) if self.parallel is None else (self.parallel.rank, self.parallel.size)
        self.batches = plan_for(self.dataset, config.batch_size, self.shuffle_rng, share)
        sample_rows = np.sort(init_rng.choice(n, size=min(n, INIT_SAMPLE), replace=False))
        sample = self.dataset.take(sample_rows, np.float64)
        if self.parallel is not None:  # before the first sum over the ranks
            self._check_ranks_agree(sample)
        #: The data's mean sample (config.center), subtracted from every batch; else None.
        self.input_mean: Any = None
        if config.center:
            mean = self._data_mean()
            self.input_mean = self.backend.asarray(mean.astype(self.backend.dtype))
            sample = sample - mean
        initial = method.init_params(init_rng, dim, config.hidden, config.tied, sample)
        # What the method asks the trainer to maintain (unit-norm decoder, b_dec from the
        # data, dead units, resampling): see sparsekit.training.upkeep.
        self.upkeep = Upkeeper(
            method.upkeep(), method, self.backend, config.hidden, config.seed,
            run_samples=n * config.epochs,
        )
        initial = self.upkeep.init_params(initial, sample)
        self.params: dict[str, Any] = {k: self.backend.asarray(v) for k, v in initial.items()}
        self.optimizer: Optimizer | None = (
            None
            if method.own_update  # declared by its type: UpdateMethod, ObjectiveUpdateMethod
            else make_optimizer(config.optimizer, config.lr, config.momentum)
        )
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, Any]] = []
        self.stop_requested = False
        self._data_sst: float | None = None  # see train_epoch
        # Its accumulator (count, mean, M2), kept for the checkpoint: the SST depends on the
        # order of the first epoch's batches, so a resumed run must not recompute it.
        self._data_variance: VarianceAccumulator | None = None

    def _check_ranks_agree(self, sample: np.ndarray) -> None:
        """Every rank holds the same data (its initial sample too), settings and method:
        refused at start, with one line, otherwise."""
        assert self.parallel is not None
        n, config = len(self.dataset), self.config
        self.parallel.check_batches(n, config.batch_size)
        self.parallel.agree(
            {
                "data": (self.dataset.name, n, self.dataset.dim),
                "data checksum": np.ascontiguousarray(sample).tobytes(),
                "settings": {**config.__dict__, "method": self.method.name},
                "method parameters": self.method.get_params(),
            }
        )

    def _data_mean(self) -> np.ndarray:
        """The mean sample ``config.center`` subtracts (float64): a streamed folder's is
        estimated from the rows it states (seeded: the same on every rank, no pass over the
        folder); otherwise every row's (data parallel: each rank sums its share)."""
        if self.dataset.streamed:
            return self.dataset.mean()  # type: ignore[attr-defined]
        return (data_mean if self.parallel is None else self.parallel.data_mean)(self.dataset)

    # -- running ---------------------------------------------------------------------------

    @property
    def model(self) -> Model:
        return Model(
            self.method,
            self.params,
            self.backend,
            image_shape=self.dataset.image_shape,
            input_mean=self.input_mean,
        )

    def fit(self) -> Model:
        """Train until ``config.epochs`` epochs are done (or a callback asks to stop)."""
        for cb in self.callbacks:
            cb.on_train_begin(self)
        while self.epoch < self.config.epochs and not self.stop_requested:
            self.train_epoch()
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.model

    def train_epoch(self) -> dict[str, Any]:
        """One pass over the data in a freshly shuffled order; returns its metrics (``{}``
        when a callback stopped it before its last step)."""
        backend, epoch = self.backend, self.epoch
        self.method.on_epoch_start(epoch, self.config.epochs)
        for cb in self.callbacks:
            cb.on_epoch_begin(self, epoch)
        steps = self.batches.start_epoch()
        sums = _EpochSums(backend, self.config.hidden, first=self._data_sst is None)
        backend.synchronize()
        start = time.perf_counter()
        # BLAS on one thread while sparsekit splits products and loops itself (no spinning
        # BLAS threads competing with them, whatever the import order; see backend.process),
        # up to the epoch's metrics: a two-thread BLAS call there (the coherence's W Wᵀ)
        # would leave a BLAS thread spinning into the next epoch (OpenBLAS: about 0.1 s),
        # halving the speed of sparsekit's own threads meanwhile.
        with own_threads():
            step, x = self._run_steps(steps, sums)
            backend.synchronize()
            seconds = time.perf_counter() - start
            if self.stop_requested and step + 1 < steps:
                return {}
            self._check_weights(step, x)
            if self.parallel is not None:
                self._sum_over_ranks(sums)
            metrics = self._epoch_metrics(sums, seconds)
        self.epoch += 1
        if self.parallel is not None and self.parallel.check_replicas:
            self.parallel.check_weights(self.params, self.epoch)
        self.history.append(metrics)
        for cb in self.callbacks:
            cb.on_epoch_end(self, metrics)
        return metrics

    def _run_steps(self, steps: int, sums: _EpochSums) -> tuple[int, Any]:
        """The epoch's ``steps`` minibatches (from :attr:`batches`), added to ``sums``:
        ``(last step run, its batch)``; stops early when a callback asks."""
        cfg, backend, method, parallel = self.config, self.backend, self.method, self.parallel
        check_every = 50 if backend.is_gpu else 1
        for step in range(steps):
            # The last step's forward pass (its B×H pre-activations: 256 MiB at batch 4,096
            # and 16,384 latents) must not live on through this step's.
            fwd = out = None
            batch_rows = self.batches.batch(step, backend.dtype)
            total = self.batches.global_rows(step) if parallel is not None else None
            # No host transfer in here: on a GPU each would wait for the step to finish.
            with backend.step_scope():
                x = backend.asarray(batch_rows)
                if self.input_mean is not None:
                    x -= self.input_mean
                resample = False
                if method.own_update:
                    if parallel is None:
                        out = method.update(backend, self.params, x, cfg.lr)
                    else:
                        reduce = parallel.reducer(x.shape[0], total)
                        out = method.update(backend, self.params, x, cfg.lr, reduce=reduce)
                    loss, rec, fwd = out.loss, out.reconstruction, out.forward
                else:
                    loss, fwd, rec, resample = self._gradient_step(x, total)
                sums.add(x, loss, rec, fwd, total)
            if resample:  # rare, and reads the device (its generator is on the host)
                self.upkeep.resample(self.params, x, fwd, self.optimizer)
            if (step + 1) % check_every == 0 or step == steps - 1:
                value = float(loss)
                if not math.isfinite(value):
                    raise DivergenceError(
                        f"training diverged at epoch {self.epoch + 1}, step {step + 1}: loss is "
                        f"{value} (try a smaller learning rate)"
                    )
            for cb in self.callbacks:
                cb.on_step_end(self, step + 1, steps)
            if self.stop_requested:
                break
        return step, x

    def _sum_over_ranks(self, sums: _EpochSums) -> None:
        """The epoch's unit counts and data variance of every rank (the loss sums already
        are the global batches')."""
        assert self.parallel is not None
        sums.active_per_unit = self.parallel.sum(sums.active_per_unit)
        if sums.variance is not None:
            sums.variance = self.parallel.merge_variance(sums.variance)

    def _check_weights(self, step: int, x: Any) -> None:
        """Raise :class:`DivergenceError` when a weight is not finite, or when the weights
        are so large that the reconstruction of the last batch ``x`` overflows."""
        xp, epoch = self.backend.xp, self.epoch
        for name, value in self.params.items():
            if not bool(xp.isfinite(value).all()):
                raise DivergenceError(
                    f"training diverged at epoch {epoch + 1}, step {step + 1}: {name} holds NaN"
                    " or infinite values (try a smaller learning rate)"
                )
        # Finite but huge weights overflow when used: check them on the last batch.
        if not bool(
            xp.isfinite(autoencoder.forward(self.method, self.backend, self.params, x).xhat).all()
        ):
            raise DivergenceError(
                f"training diverged at epoch {epoch + 1}, step {step + 1}: the weights are so"
                " large that reconstructions overflow (try a smaller learning rate)"
            )

    def _epoch_metrics(self, sums: _EpochSums, seconds: float) -> dict[str, Any]:
        """The metrics of the epoch just run, from its running sums."""
        n, dim = len(self.dataset), self.dataset.dim
        if sums.variance is not None:
            self._data_variance = sums.variance
            self._data_sst = sums.variance.sst
        counts = self.backend.to_numpy(sums.active_per_unit)
        metrics = {
            "epoch": self.epoch + 1,
            "loss": float(sums.loss_sum) / n,
            "mse": 2.0 * float(sums.rec_sum) / (n * dim),
            "mean_active": float(counts.sum()) / n,
            "dead_units": int((counts == 0).sum()),
            "seconds": seconds,
            # 1 − SSE/SST of the epoch's running reconstructions; coherence of the decoder atoms.
            "fve": fve_from_sums(2.0 * float(sums.rec_sum), self._data_sst),
            "coherence": coherence(decoder_weights(self.params), xp=self.backend.xp),
        }
        metrics.update(self.method.epoch_metrics())
        return metrics

    def _gradient_step(
        self, x: Any, total: int | None = None
    ) -> tuple[Any, autoencoder.Forward, Any, bool]:
        """One optimizer step on minibatch ``x``: (loss, forward pass, reconstruction term,
        whether dead units are due for :meth:`Upkeeper.resample`). ``total``: the global
        batch's rows, of which ``x`` is this rank's share (data parallel)."""
        backend, optimizer = self.backend, self.optimizer
        assert optimizer is not None
        upkeep = self.upkeep
        state = upkeep.step_state()
        if self.parallel is not None:
            assert total is not None
            loss, fwd, rec = self._parallel_step(x, state, total)
            self.method.after_step(backend, self.params, fwd)
            return loss, fwd, rec, upkeep.count_step(x, fwd, total, self.parallel.sum)
        loss, fwd, rec = self._optimizer_step(x, state)
        self.method.after_step(backend, self.params, fwd)
        return loss, fwd, rec, upkeep.count_step(x, fwd)

    def _parallel_step(self, x: Any, state: Any, total: int) -> tuple[Any, Any, Any]:
        """:meth:`_optimizer_step` of data-parallel training: this rank's loss and gradients
        weighted by its share and summed over the ranks, then the same update everywhere."""
        backend, xp, optimizer, upkeep = self.backend, self.backend.xp, self.optimizer, self.upkeep
        parallel = self.parallel
        assert optimizer is not None and parallel is not None
        rows = x.shape[0]
        share = parallel.batch_share(rows, total)
        state.share = share
        loss, grads, fwd, rec, decay = autoencoder.loss_and_grads_before_decay(
            self.method, backend, self.params, x, state=state, share=share
        )
        summed = parallel.weighted_sums({**grads, " loss": loss, " rec": rec}, rows, total)
        loss, rec = summed.pop(" loss"), summed.pop(" rec")
        grads = summed
        if decay is not None and not optimizer.folds_decay:
            loss = loss + decay.value
            decay.add_to(grads)
            decay = None
        for name, grad in grads.items():
            upkeep.project(name, grad, self.params)
        squares = optimizer.step(
            xp, self.params, grads, decay=None if decay is None else decay.strengths()
        )
        for name in list(self.params):
            upkeep.renormalise(name, self.params)
        if decay is not None:
            loss = loss + decay.value_from_squares(squares)
        return loss, fwd, rec

    def _optimizer_step(self, x: Any, state: Any) -> tuple[Any, autoencoder.Forward, Any]:
        backend, xp, optimizer, upkeep = self.backend, self.backend.xp, self.optimizer, self.upkeep
        assert optimizer is not None
        if optimizer.per_parameter and optimizer.folds_decay:
            # Each weight is updated as soon as its gradient is final (in cache, and the
            # step holds one H×D gradient at a time); Σ‖W‖² for weight decay comes back
            # from the update pass.
            squares: dict[str, Any] = {}

            def sink(name: str, grad: Any, decay: float | None) -> None:
                upkeep.project(name, grad, self.params)
                square = optimizer.update(xp, self.params, name, grad, decay)
                upkeep.renormalise(name, self.params)
                if decay is not None:
                    squares[name] = square

            optimizer.start_step()
            loss, _, fwd, rec, decay = autoencoder.loss_and_grads_before_decay(
                self.method, backend, self.params, x, sink=sink, state=state
            )
            if decay is not None:
                loss = loss + decay.value_from_squares(squares)
            return loss, fwd, rec
        # An optimizer with its own step(): all gradients first, then one call.
        loss, grads, fwd, rec, decay = autoencoder.loss_and_grads_before_decay(
            self.method, backend, self.params, x, state=state
        )
        if decay is not None and not optimizer.folds_decay:
            loss = loss + decay.value
            decay.add_to(grads)
            decay = None
        for name, grad in grads.items():
            upkeep.project(name, grad, self.params)
        squares = optimizer.step(
            xp, self.params, grads, decay=None if decay is None else decay.strengths()
        )
        for name in list(self.params):
            upkeep.renormalise(name, self.params)
        if decay is not None:  # Σ‖W‖² came from the update pass
            loss = loss + decay.value_from_squares(squares)
        return loss, fwd, rec

    # -- exact save and restore ------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: arrays as NumPy, the rest JSON-friendly."""
        return {
            "params": {k: self.backend.to_numpy(v) for k, v in self.params.items()},
            "optimizer": {
                k: (self.backend.to_numpy(v) if not isinstance(v, (int, float)) else v)
                for k, v in (self.optimizer.state_dict() if self.optimizer else {}).items()
            },
            "method_state": self.method.state_dict(),
            "upkeep": self.upkeep.state_dict(),
            "shuffle_rng": self.shuffle_rng.bit_generator.state,
            "batches": self.batches.state_dict(),
            "epoch": self.epoch,
            "history": list(self.history),
            "input_mean": None
            if self.input_mean is None
            else self.backend.to_numpy(self.input_mean),
        }

    def variance_state(self) -> dict[str, Any] | None:
        """The data variance accumulator behind "fve" as ``{"n", "mean", "m2"}`` (NumPy
        float64), or None before the first full epoch. Checkpoints keep it (a resumed run's
        fve is then the uninterrupted one's); :meth:`state_dict` does not, because
        ``SparseCoding.partial_fit`` carries that state to other data, whose SST differs.
        :meth:`load_state_dict` restores it when its state has ``data_variance``."""
        acc = self._data_variance
        if acc is None or acc.n == 0:
            return None
        to_numpy = self.backend.to_numpy
        return {"n": int(acc.n), "mean": to_numpy(acc.mean), "m2": to_numpy(acc.m2)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        params = state["params"]
        expected = {k: v.shape for k, v in self.params.items()}
        got = {k: tuple(np.shape(v)) for k, v in params.items()}
        if expected != got:
            raise ParameterError(f"saved parameters {got} do not match this model's {expected}")
        self.params = {k: self.backend.asarray(v) for k, v in params.items()}
        if self.optimizer is not None:
            self.optimizer.load_state_dict(
                {
                    k: (v if k == "steps" else self.backend.asarray(v))
                    for k, v in state["optimizer"].items()
                }
            )
        self.method.load_state_dict(state.get("method_state", {}))
        self.upkeep.load_state_dict(state.get("upkeep", {}))
        self.shuffle_rng.bit_generator.state = state["shuffle_rng"]
        self.batches.load_state_dict(state.get("batches") or {})
        self.epoch = int(state["epoch"])
        self.history = list(state.get("history", []))
        if state.get("input_mean") is not None:
            self.input_mean = self.backend.asarray(state["input_mean"])
        variance = state.get("data_variance")
        if variance is not None:  # absent from older checkpoints: the next epoch measures it
            xp = self.backend.xp
            acc = VarianceAccumulator(xp)
            acc.n = int(variance["n"])
            acc.mean = xp.asarray(variance["mean"], dtype=xp.float64)
            acc.m2 = xp.asarray(variance["m2"], dtype=xp.float64)
            self._data_variance, self._data_sst = acc, acc.sst


def data_mean(dataset: Dataset, chunk: int = 1024) -> np.ndarray:
    """The mean sample of ``dataset`` (float64, one pass in chunks of ``chunk`` rows: a few
    MB at a time, so a memory-mapped data set is never held whole)."""
    total = np.zeros(dataset.dim, dtype=np.float64)
    for start in range(0, len(dataset), chunk):
        rows = np.arange(start, min(start + chunk, len(dataset)))
        total += dataset.take(rows, np.float64).sum(axis=0)
    return total / len(dataset)


def add_active_counts(xp: Any, counts: Any, fwd: autoencoder.Forward, hidden: int) -> None:
    """Add to ``counts`` how many samples of the batch use each unit."""
    if isinstance(fwd.support, TopK) and fwd.support.kept is None:
        counts += xp.bincount(fwd.support.indices.ravel(), minlength=hidden)
    elif isinstance(fwd.support, TopK):  # padded rows: count the kept entries only
        kept = fwd.support.kept.ravel().astype(counts.dtype)
        counts += xp.bincount(fwd.support.indices.ravel(), weights=kept, minlength=hidden).astype(
            counts.dtype
        )
    else:
        count_active(xp, counts, fwd.code, ACTIVE_THRESHOLD)


def train(
    method: str | BaseMethod | type[BaseMethod],
    data: Any,
    *,
    callbacks: Sequence[Callback] = (),
    registry: Any = None,
    backend: Backend | None = None,
    distributed: bool | Communicator = False,
    check_replicas: bool = False,
    **settings: Any,
) -> Model:
    """Train a sparsity method on an array and return the :class:`~sparsekit.training.model.Model`.

    ``method`` is a registered name (``"ksparse"``), a :class:`Method` class or an
    instance. ``data`` is an (N, D) or (N, h, w) array (``uint8`` is scaled to [0, 1]) or a
    :class:`~sparsekit.data.dataset.Dataset`. The training settings are the ``config`` ones of
    :data:`sparsekit.training.settings.SETTINGS` (``hidden``, ``epochs``, ``batch_size``,
    ``lr``, ``optimizer``, ``momentum``, ``tied``, ``center``, ``seed``, ``dtype``, ``gpu``);
    those left as ``None`` take the method's recommended value (``center``: k-sparse subtracts
    the data's mean sample, which the returned model then subtracts in ``encode`` and adds
    back in ``decode``). Other keyword arguments are the method's own parameters::

        model = sparsekit.train("ksparse", images, hidden=1000, epochs=10, k=25)
        codes = model.encode(images)

    ``backend`` overrides ``gpu`` and ``dtype`` with a ready :class:`Backend` (e.g. the
    simulated device of :mod:`sparsekit.backend.simulated`, to test the GPU path on a CPU).

    ``distributed=True`` trains data-parallel over the ranks of ``mpiexec -n N python ...``
    (MPI's world; or pass a :class:`~sparsekit.parallel.Communicator`): every rank calls
    ``train`` with the same arguments and gets the same model, the one a single process
    trains (``docs/distributed.md``); ``check_replicas`` compares the ranks' weights after
    every epoch.
    """
    config_values, method_params = split_settings(settings, TRAIN_CONFIG_SETTINGS)
    instance = make_method(method, registry, **method_params)
    config = resolve_config(instance, **config_values)
    comm = world_communicator(distributed)
    return Trainer(
        instance,
        data,
        config,
        callbacks=callbacks,
        backend=backend,
        comm=comm,
        check_replicas=check_replicas,
    ).fit()


def world_communicator(distributed: bool | Communicator) -> Communicator | None:
    """``None`` for one process, MPI's world for ``True``, else the communicator given."""
    if distributed is True:
        return MPICommunicator()
    return distributed or None


# The signature help() and editors show: every ``config`` setting as a keyword (None: the
# method's value), then the method's own parameters.
train.__signature__ = settings_signature(  # type: ignore[attr-defined]
    train, TRAIN_CONFIG_SETTINGS, default=lambda s: None, keep_var_keyword="method_params"
)


def make_method(
    method: str | BaseMethod | type[BaseMethod], registry: Any = None, **params: Any
) -> BaseMethod:
    """A method instance from a name, class or instance (``params`` only for name/class).

    A class or instance bypasses the registry, so it passes the registry's
    :func:`~sparsekit.core.contract.check_method_class` here (a :class:`PluginError`).
    """
    if isinstance(method, BaseMethod):
        if params:
            raise ParameterError("pass method parameters to the method instance, not to train()")
        check_method_class(type(method))
        return method
    if isinstance(method, type) and issubclass(method, BaseMethod):
        check_method_class(method)
        return method(**params)
    if isinstance(method, str):
        if registry is None:

            registry = load_registry()
        return registry.create(method, **params)
    raise ParameterError(f"expected a method name, Method class or instance, got {method!r}")
