"""The generic autoencoder step, differentiated by hand.

One forward pass and one backward pass serve every gradient-trained method; the method
supplies the activation, the mask, the output function and the penalties (see
:mod:`sparsekit.methods.base`). The formulas are those of ``docs/methods.md``, in the
row-per-unit weight layout (``W_enc``, ``W_dec`` are H×D)::

    forward                               backward
    Z  = X W_encᵀ + b_enc                 G      = (X̂ − X)/B ∘ g′(Y)
    A  = f(Z),  M = mask(Z, A)            ∇b_dec = Σ_rows G
    Hc = A ∘ M                            ∇W_dec = Hcᵀ G
    Y  = Hc W_dec + b_dec                 dH     = G W_decᵀ + ∂Ω_H/∂Hc
    X̂  = g(Y)                             dZ     = dH ∘ M ∘ f′(Z)
                                          ∇W_enc = dZᵀ X,   ∇b_enc = Σ_rows dZ
    tied (W_dec = W_enc):  ∇W = dZᵀ X + Hcᵀ G

An optional penalty coupling code and weights (:meth:`Method.code_weight_penalty`) adds its
∂Ω/∂Hc to dH and its ∂Ω/∂W to the weight gradients.

On the CPU, Adam's update, weight decay's λW and the sigmoid derivatives g′, f′ of methods
that keep the default sigmoid run as fused loops (:mod:`sparsekit._jit`) with the same
results as the NumPy formulas.

When the mask is a :class:`~sparsekit.methods.base.TopK` support, every term but the encoder
product is computed on the k kept units of each row (:mod:`sparsekit.kernels`).

The trainer hands each gradient to its optimizer as soon as it is final (a *sink*, see
:func:`loss_and_grads_before_decay`): with untied weights ``W_enc`` is updated while its
gradient is still in cache, before ``Hcᵀ G`` is computed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparsekit import _jit, kernels
from sparsekit.backend import Backend
from sparsekit.methods.base import Method, StepState, TopK, WeightDecay


@dataclass
class Forward:
    """Everything the backward pass reuses from the forward pass."""

    z: Any
    a: Any
    support: Any
    #: Dense B×H code, or None when the support is TopK.
    code: Any
    #: B×k code values at ``support.indices`` when the support is TopK.
    code_values: Any
    y: Any
    xhat: Any


def decoder_weights(params: dict[str, Any]) -> Any:
    """W_dec, or W_enc when the weights are tied."""
    return params["W_dec"] if "W_dec" in params else params["W_enc"]


def pre_activation(xp: Any, params: dict[str, Any], x: Any) -> Any:
    """Z = X W_encᵀ + b_enc."""
    z = x @ params["W_enc"].T
    z += params["b_enc"]
    return z


def forward(
    method: Method, backend: Backend, params: dict[str, Any], x: Any, training: bool = True
) -> Forward:
    if method.own_objective:
        return method.forward(backend, params, x, training)
    xp = backend.xp
    z = pre_activation(xp, params, x)
    a = method.activation(xp, z)
    support = method.mask(xp, z, a, training)
    w_dec = decoder_weights(params)
    if isinstance(support, TopK):
        values = xp.take_along_axis(a, support.indices, axis=1)
        code = None
        y = kernels.code_times(backend, support.indices, values, w_dec)
    else:
        values = None
        code = a if support is None else a * support
        y = code @ w_dec
    y += params["b_dec"]
    xhat = method.output(xp, y)
    return Forward(z, a, support, code, values, y, xhat)


def dense_code(backend: Backend, fwd: Forward) -> Any:
    """The B×H code, materialised if the support is sparse."""
    if fwd.code is not None:
        return fwd.code
    xp = backend.xp
    code = xp.zeros_like(fwd.z)
    xp.put_along_axis(code, fwd.support.indices, fwd.code_values, axis=1)
    return code


def loss_and_grads(
    method: Method,
    backend: Backend,
    params: dict[str, Any],
    x: Any,
    state: StepState | None = None,
) -> tuple[Any, dict[str, Any], Forward, Any]:
    """The objective, its gradient for every parameter, the forward pass and the MSE term.

    The loss and the reconstruction term are 0-d backend arrays (no device sync). ``state``
    (dead units, ...) is only read by methods with their own objective.
    """
    loss, grads, fwd, reconstruction, decay = loss_and_grads_before_decay(
        method, backend, params, x, state=state
    )
    if decay is not None:
        loss = loss + decay.value
        decay.add_to(grads)
    return loss, grads, fwd, reconstruction


#: Receives each gradient as soon as it is final: ``sink(name, grad, decay)``, where
#: ``decay`` is the λ of a :class:`WeightDecay` on that parameter (else ``None``).
GradientSink = Callable[[str, Any, "float | None"], None]


def loss_and_grads_before_decay(
    method: Method,
    backend: Backend,
    params: dict[str, Any],
    x: Any,
    sink: GradientSink | None = None,
    state: StepState | None = None,
) -> tuple[Any, dict[str, Any], Forward, Any, WeightDecay | None]:
    """As :func:`loss_and_grads`, but a :class:`WeightDecay` penalty is returned, not applied.

    Neither the loss nor the gradients include it: the trainer's optimizer adds λW inside
    its own update pass (``Optimizer.update(..., decay=λ)``), which also returns the Σ‖W‖²
    for the decay's value (:meth:`WeightDecay.value_from_squares`), so weight decay costs
    no pass of its own over the weights.

    With a ``sink``, each parameter's gradient is handed to ``sink(name, grad, λ or None)``
    as soon as it is final instead of being returned (the dict is then empty). At that
    moment nothing later in the step reads ``params[name]``, so the sink may update it in
    place: with untied weights the trainer updates ``W_enc`` and both biases before the
    decoder's gradient is computed, while the encoder's gradient is still in cache, and the
    step never holds both H×D gradients at once.
    """
    if method.own_objective:  # the method's own forward, loss and gradients
        loss, grads, fwd, reconstruction = method.loss_and_grads(
            backend, params, x, state if state is not None else StepState()
        )
        if sink is not None:
            for name in list(grads):
                sink(name, grads.pop(name), None)
        return loss, grads, fwd, reconstruction, None
    xp = backend.xp
    batch = x.shape[0]
    fwd = forward(method, backend, params, x, training=True)
    # A penalty on a dense code reads the B×H code now, still in cache from the forward pass
    # (after the next two products it would come from memory again). TopK: further down.
    dense_penalty = method.code_penalty(xp, fwd.code) if not isinstance(fwd.support, TopK) else None
    weights = {name: params[name] for name in ("W_enc", "W_dec") if name in params}
    # Penalties on the weights read them before any update (a sink may update them).
    weight_penalty = method.weight_penalty(xp, weights)
    decay = weight_penalty if isinstance(weight_penalty, WeightDecay) else None
    extra: dict[str, list[Any]] = {}  # gradient terms to add to the products' gradients
    loss_terms: list[Any] = []
    if decay is None and weight_penalty is not None:
        value, d_weights = weight_penalty
        loss_terms.append(value)
        for name, d in d_weights.items():
            extra.setdefault(name, []).append(d)
    lams = decay.strengths() if decay is not None else {}
    grads: dict[str, Any] = {}

    def final(name: str, grad: Any) -> None:
        for d in extra.get(name, ()):
            grad += d
        if sink is None:
            grads[name] = grad
        else:
            sink(name, grad, lams.get(name))

    # A sigmoid output: G, its column sums and Σ(X̂ − X)² in one fused pass (CPU).
    fused = None if _overrides(method, "output_grad") else _jit.output_grad(fwd.xhat, x, 1 / batch)
    if fused is not None:
        g, b_dec_grad, squares = fused
        reconstruction = x.dtype.type(0.5 * squares / batch)
    else:
        diff = fwd.xhat - x
        reconstruction = 0.5 * xp.vdot(diff, diff) / batch
        g = diff
        if _overrides(method, "output_grad") or not _jit.run(
            "sigmoid_grad_into", (g, fwd.xhat), (1.0 / batch, 1.0)
        ):
            g *= 1.0 / batch
            g_out = method.output_grad(xp, fwd.y, fwd.xhat)
            if g_out is not None:
                g *= g_out
        b_dec_grad = g.sum(axis=0)
    loss = reconstruction

    tied = "W_dec" not in params
    w_dec = decoder_weights(params)
    hidden = w_dec.shape[0]

    if isinstance(fwd.support, TopK):
        idx = fwd.support.indices
        d_values = kernels.gathered_dot(backend, g, w_dec, idx)
        # The dense B×H code is materialised only for a method with a code penalty.
        needs_code = _overrides(method, "code_penalty") or _overrides(method, "code_weight_penalty")
        code = dense_code(backend, fwd) if needs_code else None
        penalty = method.code_penalty(xp, code) if needs_code else None
        if penalty is not None:
            value, d_code = penalty
            loss = loss + value
            d_values += xp.take_along_axis(d_code, idx, axis=1)
        coupled = method.code_weight_penalty(xp, code, weights) if needs_code else None
        if coupled is not None:
            value, d_code, coupled_grads = coupled
            loss = loss + value
            d_values += xp.take_along_axis(d_code, idx, axis=1)
            for name, d in coupled_grads.items():
                extra.setdefault(name, []).append(d)
        z_kept = xp.take_along_axis(fwd.z, idx, axis=1)
        f_prime = method.activation_grad(xp, z_kept, method.activation(xp, z_kept))
        if f_prime is not None:
            d_values *= f_prime
        b_enc_grad = kernels.column_sums(backend, idx, d_values, hidden)
        if tied:  # dZᵀX + Hcᵀ G in one pass over the kept entries
            grad_enc = kernels.code_transpose_times(
                backend, idx, (d_values, fwd.code_values), (x, g), hidden
            )
        else:
            grad_enc = kernels.code_transpose_times(backend, idx, d_values, x, hidden)

        def decoder_grad() -> Any:
            return kernels.code_transpose_times(backend, idx, fwd.code_values, g, hidden)
    else:
        d_code = g @ w_dec.T
        # A sigmoid hidden layer, every unit kept: the code penalty's gradient (when it is
        # one row for every sample, as KL's), f′ and the bias gradient in one fused pass.
        fuse = (
            fwd.support is None
            and not _overrides(method, "activation_grad")
            and not _overrides(method, "code_weight_penalty")
        )
        row = None
        penalty = dense_penalty
        if penalty is not None:
            value, d_penalty = penalty
            loss = loss + value
            if fuse and _repeated_row(d_penalty, d_code.shape):
                row = d_penalty[0]
            else:
                d_code += d_penalty
        coupled = method.code_weight_penalty(xp, fwd.code, weights)
        if coupled is not None:
            value, d_penalty, coupled_grads = coupled
            loss = loss + value
            d_code += d_penalty
            for name, d in coupled_grads.items():
                extra.setdefault(name, []).append(d)
        b_enc_grad = _jit.hidden_grad(d_code, fwd.a, row, 1.0) if fuse else None
        if b_enc_grad is None:
            if row is not None:
                d_code += row
            if fwd.support is not None:
                d_code *= fwd.support
            if _overrides(method, "activation_grad") or not _jit.run(
                "sigmoid_grad_into", (d_code, fwd.a), (1.0, 1.0)
            ):
                f_prime = method.activation_grad(xp, fwd.z, fwd.a)
                if f_prime is not None:
                    d_code *= f_prime
            b_enc_grad = d_code.sum(axis=0)
        grad_enc = d_code.T @ x
        code = fwd.code

        def decoder_grad() -> Any:
            return code.T @ g

    final("b_dec", b_dec_grad)
    final("b_enc", b_enc_grad)
    if tied:
        if not isinstance(fwd.support, TopK):  # (the TopK kernel summed both terms)
            grad_enc += decoder_grad()
        final("W_enc", grad_enc)
    else:  # W_enc is not read again: it may be updated before W_dec's gradient exists
        final("W_enc", grad_enc)
        del grad_enc
        final("W_dec", decoder_grad())
    for value in loss_terms:
        loss = loss + value
    return loss, grads, fwd, reconstruction, decay


def _repeated_row(array: Any, shape: tuple[int, ...]) -> bool:
    """Whether ``array`` is one row broadcast to ``shape`` (a NumPy view with row stride 0)."""
    return (
        isinstance(array, np.ndarray)
        and array.shape == shape
        and array.ndim == 2
        and array.strides[0] == 0
    )


def _overrides(method: Method, name: str) -> bool:
    """Whether ``method`` replaces the base class's (no-op) ``name``."""
    return getattr(type(method), name, None) is not getattr(Method, name)


def objective(
    method: Method,
    backend: Backend,
    params: dict[str, Any],
    x: Any,
    state: StepState | None = None,
) -> Any:
    """The training objective alone (used by gradient checks and evaluation)."""
    return loss_and_grads(method, backend, params, x, state)[0]
