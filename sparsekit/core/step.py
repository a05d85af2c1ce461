"""The generic autoencoder step, differentiated by hand.

One forward pass and one backward pass serve every gradient-trained method; the method
supplies the activation f and output g (declared :mod:`sparsekit.core.activations` objects),
the mask and the penalties (a :class:`~sparsekit.core.contract.Method`; an
:class:`~sparsekit.core.contract.ObjectiveMethod` brings its own forward pass and gradients
instead, which :func:`forward` and :func:`loss_and_grads` call). The formulas are those of
``docs/methods.md``, in the row-per-unit weight layout (``W_enc``, ``W_dec`` are H×D)::

    forward                               backward
    Z  = X W_encᵀ + b_enc                 G      = (X̂ − X)/B ∘ g′(Y)
    A  = f(Z),  M = mask(Z, A)            ∇b_dec = Σ_rows G
    Hc = A ∘ M                            ∇W_dec = Hcᵀ G
    Y  = Hc W_dec + b_dec                 dH     = G W_decᵀ + ∂Ω_H/∂Hc
    X̂  = g(Y)                             dZ     = dH ∘ M ∘ f′(Z)
                                          ∇W_enc = dZᵀ X,   ∇b_enc = Σ_rows dZ
    tied (W_dec = W_enc):  ∇W = dZᵀ X + Hcᵀ G

    L = (1/2B)‖X̂ − X‖² + Ω_H(Hc) + Ω_HW(Hc, W) + Ω_W(W)

:func:`reference_loss_and_grads` is that table, line by line, on dense arrays: the
definition. :func:`loss_and_grads` is the step the trainer runs, the same formulas arranged
for speed, and tested against the reference (``tests/test_step.py``): bit for bit on dense
supports, to a stated tolerance with a top-k support, whose products add the k kept terms of
each row in another order. Its three arrangements:

* the output and hidden backward products are the declared activations' (a sigmoid's are
  fused ops: one pass each, the same bits);
* a code penalty whose gradient is one row for every sample (:class:`RowPenalty`, KL's) is
  added inside the pass that applies f′, never broadcast to B×H;
* with a :class:`TopK` support, every term but the encoder product is computed on the k
  kept units of each row (:mod:`sparsekit.backend.sparse_code`);

and it can hand each gradient to the optimizer as soon as it is final (a *sink*, see
:func:`loss_and_grads_before_decay`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sparsekit.backend import Backend
from sparsekit.backend.sparse_code import (
    code_times,
    code_transpose_times,
    column_sums,
    gathered_dot,
)
from sparsekit.backend.threads import matmul, run_tasks
from sparsekit.core.contract import (
    COLUMN_MEANS,
    BaseMethod,
    BatchShare,
    Method,
    ObjectiveMethod,
    RowPenalty,
    StepState,
    TopK,
    WeightDecay,
    penalty_pair,
)


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


def _code_penalty(method: Method, xp: Any, code: Any, share: BatchShare | None) -> Any:
    """The method's code penalty; from the global column means under data parallelism."""
    if share is not None and method.batch_reduction == COLUMN_MEANS:
        return method.penalty_from_column_means(xp, share.column_means(code), share.rows)
    return method.code_penalty(xp, code)


def decoder_weights(params: dict[str, Any]) -> Any:
    """W_dec, or W_enc when the weights are tied."""
    return params["W_dec"] if "W_dec" in params else params["W_enc"]


def pre_activation(xp: Any, params: dict[str, Any], x: Any) -> Any:
    """Z = X W_encᵀ + b_enc."""
    return matmul(x, params["W_enc"].T, plus=params["b_enc"])


def forward(
    method: BaseMethod, backend: Backend, params: dict[str, Any], x: Any, training: bool = True
) -> Forward:
    """Z, A, the support, the code, Y and X̂ (the code kept sparse for a TopK support)."""
    if isinstance(method, ObjectiveMethod):
        return method.forward(backend, params, x, training)
    xp = backend.xp
    z = pre_activation(xp, params, x)
    a = method.hidden_activation.value(xp, z)
    support = method.mask(xp, z, a, training)
    w_dec = decoder_weights(params)
    if isinstance(support, TopK):
        values = xp.take_along_axis(a, support.indices, axis=1)
        code = None
        y = code_times(backend, support.indices, values, w_dec)
        y += params["b_dec"]
    else:
        values = None
        code = a if support is None else a * support
        y = matmul(code, w_dec, plus=params["b_dec"])
    xhat = method.output_activation.value(xp, y)
    return Forward(z, a, support, code, values, y, xhat)


def dense_code(backend: Backend, fwd: Forward) -> Any:
    """The B×H code, materialised if the support is sparse."""
    if fwd.code is not None:
        return fwd.code
    xp = backend.xp
    code = xp.zeros_like(fwd.z)
    xp.put_along_axis(code, fwd.support.indices, fwd.code_values, axis=1)
    return code


# -- the reference: the table above, line by line -----------------------------------------------


def reference_loss_and_grads(
    method: Method, backend: Backend, params: dict[str, Any], x: Any
) -> tuple[Any, dict[str, Any], Any]:
    """``(loss, {name: gradient}, reconstruction)`` computed as the module's table reads,
    on dense B×H arrays, weight decay included. The definition :func:`loss_and_grads` is
    tested against; not for training (it is slower)."""
    xp = backend.xp
    batch = x.shape[0]
    f, g_out = method.hidden_activation, method.output_activation
    w_enc, w_dec = params["W_enc"], decoder_weights(params)
    tied = "W_dec" not in params
    # forward
    z = x @ w_enc.T + params["b_enc"]
    a = f.value(xp, z)
    support = method.mask(xp, z, a, True)
    if isinstance(support, TopK):
        mask = xp.zeros_like(z)
        xp.put_along_axis(mask, support.indices, 1, axis=1)
    else:
        mask = xp.ones_like(z) if support is None else support
    code = a * mask
    y = code @ w_dec + params["b_dec"]
    xhat = g_out.value(xp, y)
    diff = xhat - x
    reconstruction = 0.5 * xp.vdot(diff, diff) / batch
    loss = reconstruction
    # backward (the scale 1/B applied as one multiplication, as the step does)
    g = diff * (1.0 / batch)
    g_prime = g_out.derivative(xp, y, xhat)
    if g_prime is not None:
        g = g * g_prime
    grads: dict[str, Any] = {"b_dec": g.sum(axis=0)}
    d_code = g @ w_dec.T
    weights = {name: params[name] for name in ("W_enc", "W_dec") if name in params}
    penalty = method.code_penalty(xp, code)
    if isinstance(penalty, RowPenalty):
        loss = loss + penalty.value
        d_code = d_code + penalty.dense(xp, d_code.shape)
    elif penalty is not None:
        loss = loss + penalty[0]
        d_code = d_code + penalty[1]
    # Weight terms in the step's order: an ordinary weight penalty, the coupled penalty's,
    # and weight decay last.
    weight_penalty = method.weight_penalty(xp, weights)
    decay = weight_penalty if isinstance(weight_penalty, WeightDecay) else None
    weight_terms: list[tuple[Any, dict[str, Any]]] = []
    if weight_penalty is not None and decay is None:
        weight_terms.append(penalty_pair(weight_penalty))
    coupled = method.code_weight_penalty(xp, code, weights)
    if coupled is not None:
        loss = loss + coupled[0]
        d_code = d_code + coupled[1]
        weight_terms.append((None, coupled[2]))
    d_z = d_code * mask
    f_prime = f.derivative(xp, z, a)
    if f_prime is not None:
        d_z = d_z * f_prime
    grads["b_enc"] = d_z.sum(axis=0)
    grads["W_enc"] = d_z.T @ x
    decoder_grad = code.T @ g
    if tied:
        grads["W_enc"] = grads["W_enc"] + decoder_grad
    else:
        grads["W_dec"] = decoder_grad
    for _, d_weights in weight_terms:
        for name, d in d_weights.items():
            grads[name] = grads[name] + d
    for value, _ in weight_terms:
        if value is not None:
            loss = loss + value
    if decay is not None:
        loss = loss + decay.value
        for name, d in decay.grads.items():
            grads[name] = grads[name] + d
    return loss, grads, reconstruction


# -- the step the trainer runs ------------------------------------------------------------------


def loss_and_grads(
    method: BaseMethod,
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


class _Gradients:
    """Where the step's results go: the loss terms, and each gradient once final (to the
    sink, or kept), with the terms of weight penalties added first."""

    def __init__(self, sink: GradientSink | None, decay: WeightDecay | None) -> None:
        self.sink = sink
        self.lams = decay.strengths() if decay is not None else {}
        self.extra: dict[str, list[Any]] = {}
        self.grads: dict[str, Any] = {}
        self.loss_terms: list[Any] = []

    def add_weight_terms(self, d_weights: dict[str, Any]) -> None:
        for name, d in d_weights.items():
            self.extra.setdefault(name, []).append(d)

    def final(self, name: str, grad: Any) -> None:
        for d in self.extra.get(name, ()):
            grad += d
        if self.sink is None:
            self.grads[name] = grad
        else:
            self.sink(name, grad, self.lams.get(name))


def loss_and_grads_before_decay(
    method: BaseMethod,
    backend: Backend,
    params: dict[str, Any],
    x: Any,
    sink: GradientSink | None = None,
    state: StepState | None = None,
    share: BatchShare | None = None,
) -> tuple[Any, dict[str, Any], Forward, Any, WeightDecay | None]:
    """As :func:`loss_and_grads`, but a :class:`WeightDecay` penalty is returned, not applied.

    Neither the loss nor the gradients include it: the trainer's optimizer adds λW inside
    its own update pass (``Optimizer.update(..., decay=λ)``), which also returns the Σ‖W‖²
    for the decay's value (:meth:`WeightDecay.value_from_squares`), so weight decay costs
    no pass of its own over the weights.

    With a ``sink``, each parameter's gradient is handed to ``sink(name, grad, λ or None)``
    as soon as it is final instead of being returned (the dict is then empty). At that
    moment nothing later in the step reads ``params[name]``, so the sink may update it in
    place, while the gradient is still in cache. With untied weights neither weight's
    gradient reads a weight, so the two are independent tasks
    (:func:`sparsekit.backend.threads.run_tasks`): on two threads each is computed and
    handed to the sink on its own thread, side by side (the sink must take calls from two
    threads at once); otherwise one after the other, and the step never holds both H×D
    gradients at once.

    ``share`` (data-parallel training, see :class:`BatchShare`) makes a method declaring
    ``COLUMN_MEANS`` read the global batch's column means; everything else is this rank's
    step on its rows, which the trainer weights and sums over the ranks.
    """
    if isinstance(method, ObjectiveMethod):  # the method's own forward, loss and gradients
        loss, grads, fwd, reconstruction = method.loss_and_grads(
            backend, params, x, state if state is not None else StepState()
        )
        if sink is not None:
            for name in list(grads):
                sink(name, grads.pop(name), None)
        return loss, grads, fwd, reconstruction, None
    xp = backend.xp
    fwd = forward(method, backend, params, x, training=True)
    # A penalty on a dense code reads the B×H code now, still in cache from the forward pass
    # (after the next two products it would come from memory again). TopK: further down.
    topk = isinstance(fwd.support, TopK)
    code_penalty = None if topk else _code_penalty(method, xp, fwd.code, share)
    weights = {name: params[name] for name in ("W_enc", "W_dec") if name in params}
    # Penalties on the weights read them before any update (a sink may update them).
    weight_penalty = method.weight_penalty(xp, weights)
    decay = weight_penalty if isinstance(weight_penalty, WeightDecay) else None
    out = _Gradients(sink, decay)
    if decay is None and weight_penalty is not None:
        value, d_weights = penalty_pair(weight_penalty)
        out.loss_terms.append(value)
        out.add_weight_terms(d_weights)
    # G = (X̂ − X)/B ∘ g′(Y), Σ_rows G and Σ(X̂ − X)² (one pass for a sigmoid output).
    g, b_dec_grad, squares = method.output_activation.output_delta(
        xp, fwd.xhat, fwd.y, x, 1.0 / x.shape[0]
    )
    # (1/2B)‖X̂ − X‖² in X's dtype (a fused pass sums the squares in float64).
    reconstruction = (0.5 * squares / x.shape[0]).astype(x.dtype)
    loss = reconstruction
    if topk:
        loss, b_enc_grad, encoder_grad, decoder_grad = _topk_backward(
            method, backend, params, x, fwd, g, weights, out, loss, share
        )
    else:
        loss, b_enc_grad, encoder_grad, decoder_grad = _dense_backward(
            method, backend, params, x, fwd, g, weights, out, loss, code_penalty
        )
    out.final("b_dec", b_dec_grad)
    out.final("b_enc", b_enc_grad)
    _weight_gradients(xp, "W_dec" not in params, out, encoder_grad, decoder_grad)
    for value in out.loss_terms:
        loss = loss + value
    return loss, out.grads, fwd, reconstruction, decay


def _weight_gradients(
    xp: Any,
    tied: bool,
    out: _Gradients,
    encoder_grad: Callable[[], Any],
    decoder_grad: Callable[[], Any] | None,
) -> None:
    """Compute the weights' gradients and hand each over (:meth:`_Gradients.final`)."""
    if tied:  # ∇W = dZᵀX + Hcᵀ G
        grad_enc = encoder_grad()
        if decoder_grad is not None:  # (the TopK kernel summed both terms already)
            grad_enc += decoder_grad()
        out.final("W_enc", grad_enc)
        return
    assert decoder_grad is not None
    # neither gradient reads a weight: each is final, and its update due, on its own
    run_tasks(
        xp,
        [
            lambda: out.final("W_enc", encoder_grad()),
            lambda: out.final("W_dec", decoder_grad()),
        ],
    )


def _dense_backward(
    method: Method,
    backend: Backend,
    params: dict[str, Any],
    x: Any,
    fwd: Forward,
    g: Any,
    weights: dict[str, Any],
    out: _Gradients,
    loss: Any,
    code_penalty: Any,
) -> tuple[Any, Any, Callable[[], Any], Callable[[], Any]]:
    """dH, dZ, ∇b_enc and the two weight gradients' products, not yet run, with a dense
    support (None or a 0/1 mask)."""
    xp = backend.xp
    w_dec = decoder_weights(params)
    d_code = matmul(g, w_dec.T)  # dH = G W_decᵀ
    row = None  # a gradient row shared by every sample, added in the f′ pass
    if isinstance(code_penalty, RowPenalty):
        loss = loss + code_penalty.value
        row = code_penalty.row
    elif code_penalty is not None:
        value, d_penalty = code_penalty
        loss = loss + value
        d_code += d_penalty
    coupled = method.code_weight_penalty(xp, fwd.code, weights)
    if coupled is not None:
        value, d_penalty, coupled_grads = coupled
        loss = loss + value
        d_code += d_penalty
        out.add_weight_terms(coupled_grads)
    if fwd.support is not None:  # dH ∘ M: the shared row first, then the mask
        if row is not None:
            d_code += row
            row = None
        d_code *= fwd.support
    # dZ = dH ∘ f′(Z) in place, and ∇b_enc = Σ_rows dZ (one pass for a sigmoid).
    b_enc_grad = method.hidden_activation.hidden_delta(xp, d_code, fwd.z, fwd.a, row, 1.0)
    code = fwd.code

    def encoder_grad() -> Any:
        return matmul(d_code.T, x)

    def decoder_grad() -> Any:
        return matmul(code.T, g)

    return loss, b_enc_grad, encoder_grad, decoder_grad


def _topk_backward(
    method: Method,
    backend: Backend,
    params: dict[str, Any],
    x: Any,
    fwd: Forward,
    g: Any,
    weights: dict[str, Any],
    out: _Gradients,
    loss: Any,
    share: BatchShare | None = None,
) -> tuple[Any, Any, Callable[[], Any], Callable[[], Any] | None]:
    """The same terms on the k kept units of each row (a :class:`TopK` support)."""
    xp = backend.xp
    w_dec = decoder_weights(params)
    hidden = w_dec.shape[0]
    idx = fwd.support.indices
    d_values = gathered_dot(backend, g, w_dec, idx)  # dH at the kept entries
    if method.uses_code_penalty:  # the dense B×H code only for a method that reads it
        code = dense_code(backend, fwd)
        penalty = _code_penalty(method, xp, code, share)
        if isinstance(penalty, RowPenalty):
            loss = loss + penalty.value
            d_values += penalty.row[idx]
        elif penalty is not None:
            loss = loss + penalty[0]
            d_values += xp.take_along_axis(penalty[1], idx, axis=1)
        coupled = method.code_weight_penalty(xp, code, weights)
        if coupled is not None:
            value, d_code, coupled_grads = coupled
            loss = loss + value
            d_values += xp.take_along_axis(d_code, idx, axis=1)
            out.add_weight_terms(coupled_grads)
    f = method.hidden_activation
    z_kept = xp.take_along_axis(fwd.z, idx, axis=1)
    f_prime = f.derivative(xp, z_kept, f.value(xp, z_kept))
    if f_prime is not None:
        d_values *= f_prime
    b_enc_grad = column_sums(backend, idx, d_values, hidden)
    if "W_dec" not in params:  # dZᵀX + Hcᵀ G in one pass over the kept entries

        def both_terms() -> Any:
            return code_transpose_times(
                backend, idx, (d_values, fwd.code_values), (x, g), hidden
            )

        return loss, b_enc_grad, both_terms, None

    def encoder_grad() -> Any:
        return code_transpose_times(backend, idx, d_values, x, hidden)

    def decoder_grad() -> Any:
        return code_transpose_times(backend, idx, fwd.code_values, g, hidden)

    return loss, b_enc_grad, encoder_grad, decoder_grad


def objective(
    method: BaseMethod,
    backend: Backend,
    params: dict[str, Any],
    x: Any,
    state: StepState | None = None,
) -> Any:
    """The training objective alone (used by gradient checks and evaluation)."""
    return loss_and_grads(method, backend, params, x, state)[0]
