"""The five built-in methods written the ordinary JAX way, for the benchmark only.

The same models as ``torch_models.py`` (same forward pass, loss, parameter shapes and initial
values), as a JAX user would write them: a pure loss function of a parameter dict,
``jax.value_and_grad`` for the gradients, Adam (PyTorch's and optax's defaults: β = 0.9,
0.999, ε = 1e-8; optax's ``adam`` when optax is installed, else the same formula written
here), and the whole training step, minibatch gather included, under one ``jax.jit``.
Arora et al.'s rule has no gradient: its step is the update written with ``jnp`` operations,
jitted the same way. The k-sparse model uses ``jax.lax.top_k`` and a dense B×H code
(``.at[].set``) that autodiff differentiates densely, as PyTorch's twin does.

Every step returns new arrays (JAX arrays are immutable); the parameters and optimizer state
are donated to the step so XLA can update them in place.

JAX is never a dependency of sparsekit: ``bench/bench_train.py`` imports this module only
when ``jax`` is installed (``pip install 'jax[cpu]'`` in a benchmark environment).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

try:
    import optax
except ImportError:  # the same Adam, written out
    optax = None


def _adam(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """(init, update) of Adam on a parameter dict: optax's, or the textbook formula."""
    if optax is not None:
        opt = optax.adam(lr, b1=b1, b2=b2, eps=eps)

        def update(grads, state, params):
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        return opt.init, update

    def init(params):
        # m and v each their own zeros: the state is donated, and one buffer given twice is
        # an error ("Attempt to donate the same buffer twice", JAX 0.10.2 on an Intel host)
        return {
            "t": jnp.zeros((), jnp.int32),
            "m": jax.tree_util.tree_map(jnp.zeros_like, params),
            "v": jax.tree_util.tree_map(jnp.zeros_like, params),
        }

    def update(grads, state, params):
        t = state["t"] + 1
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state["m"], grads)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state["v"], grads)
        c1, c2 = 1 - b1**t, 1 - b2**t
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), params, m, v
        )
        return params, {"t": t, "m": m, "v": v}

    return init, update


def autoencoder_loss(
    method: str, weight_decay: float, rho: float, beta: float, k: int
) -> Callable[[dict[str, jax.Array], jax.Array], jax.Array]:
    """plain / l2 / kl / ksparse: Z = X W_encᵀ + b_enc, code, Y = code W_dec + b_dec."""

    def loss(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        tied = "W_dec" not in p
        w_dec = p["W_enc"] if tied else p["W_dec"]
        z = x @ p["W_enc"].T + p["b_enc"]
        if method == "ksparse":
            values, indices = jax.lax.top_k(z, k)
            rows = jnp.arange(z.shape[0])[:, None]
            code = jnp.zeros_like(z).at[rows, indices].set(values)
            xhat = code @ w_dec + p["b_dec"]
        else:
            code = jax.nn.sigmoid(z)
            xhat = jax.nn.sigmoid(code @ w_dec + p["b_dec"])
        total = 0.5 * jnp.sum((xhat - x) ** 2) / x.shape[0]
        if method in ("l2", "kl"):
            decay = jnp.sum(p["W_enc"] ** 2)
            if not tied:
                decay = decay + jnp.sum(p["W_dec"] ** 2)
            total = total + 0.5 * weight_decay * decay
        if method == "kl":
            rho_hat = jnp.clip(code.mean(axis=0), 1e-6, 1 - 1e-6)
            kl = rho * jnp.log(rho / rho_hat) + (1 - rho) * jnp.log((1 - rho) / (1 - rho_hat))
            total = total + beta * jnp.sum(kl)
        return total

    return loss


class JaxModel:
    """One model: ``step(rows)`` trains on ``images[rows]`` and returns the loss (async)."""

    def __init__(
        self,
        method: str,
        params: Mapping[str, np.ndarray],
        images: np.ndarray,
        scale: float,
        settings: Mapping[str, Any],
    ) -> None:
        lr = float(settings["lr"])
        self.images = jnp.asarray(images)  # as stored (uint8), scaled per minibatch in the step
        scale = np.float32(scale)
        if method == "arora":
            tau = float(settings.get("tau", 1.0))
            self.state: Any = jnp.asarray(np.asarray(params["W_enc"], np.float32))

            def arora_step(w, images, rows):
                y = images[rows].astype(jnp.float32) * scale
                s = y @ w.T
                code = s * (jnp.abs(s) >= tau)
                residual = code @ w - y
                g_hat = jnp.sign(code).T @ residual / y.shape[0]
                w = w - lr * g_hat
                w = w / jnp.maximum(jnp.linalg.norm(w, axis=1, keepdims=True), 1e-12)
                return w, 0.5 * jnp.sum(residual * residual) / y.shape[0]

            self._step = jax.jit(arora_step, donate_argnums=0)
        else:
            loss = autoencoder_loss(
                method,
                float(settings.get("weight_decay", 0.0)),
                float(settings.get("rho", 0.1)),
                float(settings.get("beta", 3.0)),
                int(settings.get("k", 25)),
            )
            init, update = _adam(lr)
            p = {name: jnp.asarray(np.asarray(v, np.float32)) for name, v in params.items()}
            self.state = (p, init(p))

            def train_step(state, images, rows):
                p, opt_state = state
                x = images[rows].astype(jnp.float32) * scale
                value, grads = jax.value_and_grad(loss)(p, x)
                p, opt_state = update(grads, opt_state, p)
                return (p, opt_state), value

            self._step = jax.jit(train_step, donate_argnums=0)

    def step(self, rows: np.ndarray) -> jax.Array:
        self.state, loss = self._step(self.state, self.images, jnp.asarray(rows))
        return loss

    def block(self) -> None:
        """Wait for every dispatched step (JAX runs them asynchronously)."""
        jax.block_until_ready(self.state)


def optimizer_name() -> str:
    return f"optax {optax.__version__}" if optax is not None else "adam (jax_models)"
