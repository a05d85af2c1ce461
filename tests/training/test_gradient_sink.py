"""The trainer's streamed update: each gradient handed over as soon as it is final.

``loss_and_grads_before_decay(..., sink=...)`` promises that when it hands ``name``'s
gradient to the sink, nothing later in the step reads ``params[name]``: the trainer updates
that parameter there and then. These tests hold it to that (the sink wrecks the parameter it
has just received) and check that training through the sink gives the same bits as the
classic path (all gradients, then one ``Optimizer.step``).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import sparsekit
from sparsekit.core import step as autoencoder
from sparsekit.core.contract import TopK, WeightDecay, penalty_pair
from sparsekit.methods.ksparse import top_k_indices
from sparsekit.methods.l2 import L2
from sparsekit.training.optim import SGD, Adam
from sparsekit.training.trainer import Trainer


class ScaledL2(L2):
    """Weight decay as an ordinary (value, gradients) penalty, not a WeightDecay."""

    name = "scaled-l2-test"

    def weight_penalty(self, xp, weights):
        value, grads = penalty_pair(super().weight_penalty(xp, weights))
        return value, {k: 2 * g for k, g in grads.items()}


class CoupledL1(L2):
    """A code–weight penalty, Ω = (μ/B) Σ_ij H_ij ‖d_j‖², on top of weight decay."""

    name = "coupled-test"
    mu = 0.3

    def code_weight_penalty(self, xp, code, weights):
        name = "W_dec" if "W_dec" in weights else "W_enc"
        w = weights[name]
        scale = self.mu / code.shape[0]
        norms = (w * w).sum(axis=1)
        total = code.sum(axis=0)
        value = scale * xp.vdot(total, norms)
        return (
            value,
            scale * xp.broadcast_to(norms, code.shape),
            {name: 2 * scale * w * total[:, None]},
        )


class TopKL2(L2):
    """Weight decay with a top-k support, untied or tied (the sparse gradient kernels)."""

    name = "topk-l2-test"

    def mask(self, xp, z, a, training):
        return TopK(top_k_indices(xp, z, 4))


def _method(name: str):
    custom = {"scaled-l2": ScaledL2, "coupled": CoupledL1, "topk-l2": TopKL2}
    if name in custom:
        return custom[name](weight_decay=1e-2)
    if name == "ksparse":
        return sparsekit.load_registry().create(name, k=5, k_start=5)
    return sparsekit.load_registry().create(name)


NAMES = ["plain", "l2", "kl", "ksparse", "scaled-l2", "coupled", "topk-l2"]
CASES = [(n, t) for n in NAMES for t in (False, True)]


def _problem(method, tied: bool, dtype: str = "float32"):
    backend = sparsekit.get_backend(False, dtype)
    rng = np.random.default_rng(0)
    dim, hidden, batch = 30, 20, 50
    x = rng.uniform(0, 1, size=(batch, dim)).astype(dtype)
    params = method.init_params(np.random.default_rng(0), dim, hidden, tied, x)
    params = {k: v.astype(dtype) for k, v in params.items()}
    params["b_enc"] += rng.standard_normal(hidden).astype(dtype) * 0.1
    params["b_dec"] += rng.standard_normal(dim).astype(dtype) * 0.1
    return backend, params, x


@pytest.mark.parametrize(
    ("name", "tied"), CASES, ids=[f"{n}-{'tied' if t else 'untied'}" for n, t in CASES]
)
def test_sink_gets_every_final_gradient_once_and_may_update_at_once(name, tied):
    method = _method(name)
    backend, params, x = _problem(method, tied)
    loss, grads, _, rec, decay = autoencoder.loss_and_grads_before_decay(
        method, backend, {k: v.copy() for k, v in params.items()}, x
    )

    live = {k: v.copy() for k, v in params.items()}
    received: list[tuple[str, np.ndarray, float | None]] = []

    def sink(key, grad, lam):
        received.append((key, grad.copy(), lam))
        live[key][...] = np.nan  # "updated": any later read of it would poison the result

    loss_s, rest, _, rec_s, decay_s = autoencoder.loss_and_grads_before_decay(
        method, backend, live, x, sink=sink
    )
    assert rest == {}
    order = [key for key, _, _ in received]
    assert sorted(order) == sorted(grads), "every gradient exactly once"
    if not tied:  # the encoder is handed over (and may be updated) before W_dec's gradient
        assert order.index("W_enc") < order.index("W_dec")
    for key, grad, lam in received:
        assert grad.dtype == grads[key].dtype
        assert np.array_equal(grad, grads[key]), f"{key}: max |Δ| {np.abs(grad - grads[key]).max()}"
        expected = decay.strengths().get(key) if isinstance(decay, WeightDecay) else None
        assert lam == expected
    assert np.array_equal(loss_s, loss) and np.array_equal(rec_s, rec)
    assert (decay_s is None) == (decay is None)


class ClassicAdam(Adam):
    """An optimizer with its own step(): the trainer then takes the classic path."""

    def step(self, xp, params, grads, decay=None):
        return super().step(xp, params, grads, decay)


class NoFoldSGD(SGD):
    """An optimizer that does not fold weight decay: the trainer adds λW itself."""

    folds_decay = False

    def step(self, xp, params, grads, decay=None):
        assert decay is None
        return super().step(xp, params, grads)


@pytest.mark.parametrize(
    ("name", "tied", "classic"),
    [
        ("l2", False, ClassicAdam),
        ("kl", False, ClassicAdam),
        ("l2", True, ClassicAdam),
        ("ksparse", False, ClassicAdam),
        ("scaled-l2", False, ClassicAdam),
        ("l2", False, NoFoldSGD),
    ],
)
def test_streamed_training_equals_the_classic_step(name, tied, classic):
    """Same parameters, optimizer state and losses, bit for bit, on both trainer paths."""
    data = np.random.default_rng(7).uniform(0, 1, size=(120, 30)).astype(np.float32)
    optimizer = "sgd" if classic is NoFoldSGD else "adam"
    lr = 0.5 if optimizer == "sgd" else 1e-2

    def run(swap: bool):
        method = _method(name)
        config = sparsekit.resolve_config(
            method,
            hidden=12,
            epochs=2,
            batch_size=25,
            seed=3,
            tied=tied,
            lr=lr,
            optimizer=optimizer,
        )
        trainer = Trainer(method, data, config)
        if swap:
            trainer.optimizer = classic(lr)
        trainer.fit()
        return trainer

    streamed, classic_run = run(False), run(True)
    assert streamed.optimizer.steps == classic_run.optimizer.steps == 10
    for key, value in streamed.params.items():
        assert np.array_equal(value, classic_run.params[key]), key
    state, classic_state = streamed.optimizer.state_dict(), classic_run.optimizer.state_dict()
    assert state.keys() == classic_state.keys()
    for key, value in state.items():
        assert np.array_equal(value, classic_state[key]), key
    for a, b in zip(streamed.history, classic_run.history, strict=True):
        assert a["mse"] == b["mse"]
        if classic is NoFoldSGD:  # the decay's value from a float32 vdot, not the fused pass
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
        else:
            assert a["loss"] == b["loss"]


def test_optimizer_step_is_start_step_then_update():
    """Optimizer.step equals start_step() followed by update() per parameter, Σp² included."""
    rng = np.random.default_rng(2)
    params = {"W": rng.standard_normal((300, 900)).astype(np.float32), "b": np.ones(7, np.float32)}
    grads = [
        {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
        for _ in range(3)
    ]
    a_params = {k: v.copy() for k, v in params.items()}
    b_params = {k: v.copy() for k, v in params.items()}
    a, b = Adam(1e-2), Adam(1e-2)
    for g in grads:
        squares = a.step(np, a_params, {k: v.copy() for k, v in g.items()}, decay={"W": 0.1})
        b.start_step()
        sq_w = b.update(np, b_params, "W", g["W"].copy(), 0.1)
        assert b.update(np, b_params, "b", g["b"].copy()) is None
        assert squares.keys() == {"W"} and squares["W"] == sq_w
    assert a.steps == b.steps == 3
    for key in params:
        assert np.array_equal(a_params[key], b_params[key])


def test_untied_weight_gradients_side_by_side_train_the_same_bits(monkeypatch):
    """On two threads the two weights' gradients, each a product and its update, run side by
    side (threads.run_tasks): the same parameters, bit for bit, as one after the other."""
    from sparsekit.backend import threads
    from sparsekit.core import step

    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "2")
    data = np.random.default_rng(8).uniform(0, 1, size=(256, 300)).astype(np.float32)
    ran_on: list[set[int]] = []

    def spied(xp, tasks):
        seen: set[int] = set()

        def watched(task):
            def run():
                seen.add(threading.get_ident())
                task()

            return run

        threads.run_tasks(xp, [watched(t) for t in tasks])
        ran_on.append(seen)

    def one_after_another(xp, tasks):
        for task in tasks:
            task()

    def train(run_tasks):
        monkeypatch.setattr(step, "run_tasks", run_tasks)
        method = _method("l2")
        config = sparsekit.resolve_config(
            method, hidden=200, epochs=2, batch_size=64, seed=3, lr=1e-2, optimizer="adam"
        )
        trainer = Trainer(method, data, config)
        trainer.fit()
        return trainer

    side_by_side, sequential = train(spied), train(one_after_another)
    assert ran_on and all(len(seen) == 2 for seen in ran_on)  # two threads every step
    for key, value in side_by_side.params.items():
        assert np.array_equal(value, sequential.params[key]), key
    for a, b in zip(side_by_side.history, sequential.history, strict=True):
        assert a["loss"] == b["loss"] and a["mse"] == b["mse"]
