"""A synthetic world for sparse autoencoders with a known dictionary (``synthetic-sae``).

After SynthSAEBench (Chanin & Garriga-Alonso 2026, arXiv 2602.14687): every sample is a
sparse, non-negative combination of ``features`` known unit vectors in ``dim`` dimensions
(many more features than dimensions: superposition), plus a fixed bias::

    x = Σ_i a_i v_i + b

* **Feature vectors** ``v_i``: Gaussian rows normalised to unit length (the benchmark's 100
  Adam steps of "orthogonalisation" barely move random vectors; they are left out).
  ``b`` is a random direction of norm ``bias``.
* **Zipf firing**: feature ``i`` (1-based rank) fires with probability
  ``p_i = p_min + (p_max − p_min)(i^(−a) − N^(−a)) / (1 − N^(−a))``, descending in ``i``.
* **Correlated firing** (Gaussian copula): ``g = F ζ + sqrt(1 − ‖F_i‖²) ξ`` with a fixed
  low-rank factor ``F`` (``N × corr_rank``, entries ``N(0, corr_scale²)``), ``ζ, ξ`` standard
  normal; feature ``i`` fires when ``g_i > Φ⁻¹(1 − q_i)``, so its marginal rate stays ``q_i``.
* **Magnitudes**: ``a_i = ReLU(μ_i + σ_i ε)`` for a firing feature; ``μ_i`` linear from
  ``mu_start`` (feature 0) to ``mu_end`` (feature N−1), ``σ_i = |N(sigma_mean, sigma_std²)|``
  drawn once per feature.
* **Hierarchy**: ``roots`` trees of branching ``branching`` and ``depth`` child levels. The
  roots are features ``0 … roots−1`` (the most frequent); children get consecutive indices
  breadth-first (child ``c`` of the ``j``-th node of a level is node ``j·branching + c`` of
  the next level). Top-down, level by level: a child whose parent is inactive is switched
  off, and under a *mutually exclusive* parent (a fraction ``exclusive`` of the parents) at
  most one child stays on, chosen uniformly among those that fired. Children are sampled with
  ``q_i = p_i / (p_parent · E[1/K_i])`` (``K_i`` the number of firing siblings including
  ``i``; ``E`` over the siblings' independent draws, solved by fixed-point iteration, and
  ``q_i`` clamped at 1), so that each feature's marginal rate stays close to ``p_i``.

Samples are generated in chunks (``CHUNK`` rows at a time: the dense ``rows × features`` draws
of one chunk are the largest temporaries) from a seed: the same parameters give the same
bytes. The training split and the test split come from independent streams of the same world.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any

import numpy as np

from sparsekit.data.arrays import ArrayFileDataset
from sparsekit.errors import ParameterError

#: Rows generated at a time.
CHUNK = 2048
#: Name of the data set (``--dataset synthetic-sae``).
NAME = "synthetic-sae"


@dataclass(frozen=True)
class SyntheticSAEParams:
    """The parameters of a ``synthetic-sae`` world (defaults sized for a 2-core CPU)."""

    features: int = 4096
    dim: int = 256
    n: int = 100_000
    seed: int = 0
    zipf: float = 0.5
    p_max: float = 0.4
    p_min: float = 5e-4
    roots: int = 32
    branching: int = 4
    depth: int = 3
    exclusive: float = 1.0
    corr_rank: int = 25
    corr_scale: float = 0.1
    mu_start: float = 5.0
    mu_end: float = 4.0
    sigma_mean: float = 0.5
    sigma_std: float = 0.5
    bias: float = 0.5

    def validate(self) -> SyntheticSAEParams:
        def fail(message: str) -> None:
            raise ParameterError(f"synthetic-sae data: {message}")

        for name in ("features", "dim", "n", "branching"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(f"{name} must be a positive integer, got {value!r}")
        for name in ("roots", "depth", "corr_rank", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                fail(f"{name} must be an integer >= 0, got {value!r}")
        for f in fields(self):
            if f.type in ("float", float) and not math.isfinite(getattr(self, f.name)):
                fail(f"{f.name} must be a finite number, got {getattr(self, f.name)!r}")
        if not 0 < self.p_min <= self.p_max <= 1:
            fail(f"need 0 < p_min <= p_max <= 1, got p_min={self.p_min}, p_max={self.p_max}")
        if self.zipf <= 0:
            fail(f"zipf must be > 0, got {self.zipf} (for equal rates set p_min = p_max)")
        if not 0 <= self.exclusive <= 1:
            fail(f"exclusive must be between 0 and 1, got {self.exclusive}")
        if self.corr_scale < 0:
            fail(f"corr_scale must be >= 0, got {self.corr_scale}")
        if self.sigma_std < 0 or self.bias < 0:
            fail("sigma_std and bias must be >= 0")
        if self.tree_size > self.features:
            fail(
                f"{self.roots} roots with branching {self.branching} and depth {self.depth} need "
                f"{self.tree_size} features, more than features={self.features}"
            )
        return self

    @property
    def level_sizes(self) -> list[int]:
        """Number of nodes at each tree level (roots first); empty without trees."""
        if self.roots == 0:
            return []
        return [self.roots * self.branching**level for level in range(self.depth + 1)]

    @property
    def tree_size(self) -> int:
        return sum(self.level_sizes)


_INT_KEYS = {f.name for f in fields(SyntheticSAEParams) if f.type in ("int", int)}
_KEYS = [f.name for f in fields(SyntheticSAEParams)]


def parse_spec(spec: str) -> SyntheticSAEParams:
    """``"synthetic-sae:features=1024,dim=64,seed=3"`` -> the world's parameters."""
    _, _, rest = spec.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in _KEYS:
            raise ParameterError(
                f"bad synthetic-sae data option {item!r} (use key=value with keys "
                f"{', '.join(_KEYS)})"
            )
        try:
            kwargs[key] = int(value) if key in _INT_KEYS else float(value)
        except ValueError:
            raise ParameterError(f"bad value in synthetic-sae data option {item!r}") from None
    return SyntheticSAEParams(**kwargs).validate()


def zipf_probabilities(n: int, exponent: float, p_max: float, p_min: float) -> np.ndarray:
    """``p_i = p_min + (p_max − p_min)(i^(−a) − n^(−a)) / (1 − n^(−a))`` for ranks 1…n."""
    ranks = np.arange(1, n + 1, dtype=np.float64)
    if n == 1:
        return np.array([p_max])
    top = ranks**-exponent - float(n) ** -exponent
    return p_min + (p_max - p_min) * top / (1.0 - float(n) ** -exponent)


def _inverse_share(q: np.ndarray) -> np.ndarray:
    """``E[1/K_i]`` for every member of sibling groups (rows of ``q``): ``K_i = 1 + S``,
    ``S`` the number of the other members that fire, each independently with ``q_j``."""
    groups, b = q.shape
    out = np.empty_like(q)
    for i in range(b):
        others = np.delete(q, i, axis=1)
        dist = np.zeros((groups, b))
        dist[:, 0] = 1.0
        for j in range(b - 1):  # Poisson-binomial distribution of S by dynamic programming
            p = others[:, j : j + 1]
            dist[:, 1:] = dist[:, 1:] * (1 - p) + dist[:, :-1] * p
            dist[:, 0] *= 1 - p[:, 0]
        out[:, i] = dist @ (1.0 / np.arange(1, b + 1))
    return out


class SyntheticSAEDataset(ArrayFileDataset):
    """The signals of a split, with the world's true dictionary as :attr:`ground_truth`."""

    def __init__(self, signals: np.ndarray, *, name: str, source: dict[str, Any], truth: Any):
        super().__init__(signals, name=name, source=source)
        #: ``dim × features`` unit columns: the dictionary the signals were made from.
        self.ground_truth: np.ndarray = truth


@dataclass
class SyntheticSAEWorld:
    """The fixed part of a world: feature vectors, rates, magnitudes, trees, copula factor."""

    params: SyntheticSAEParams
    #: (features, dim) unit rows: the ground-truth dictionary.
    feature_vectors: np.ndarray
    bias: np.ndarray  # (dim,)
    #: Target marginal firing rate of every feature (Zipf).
    probabilities: np.ndarray
    #: Rate each feature is *sampled* with before the hierarchy is applied.
    sample_probabilities: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    #: Parent index of every feature (−1 for roots and features outside the trees).
    parent: np.ndarray
    #: For each tree parent (every non-leaf node, by index), whether its children exclude
    #: each other.
    exclusive_parent: np.ndarray
    corr_factor: np.ndarray  # (features, corr_rank)

    @classmethod
    def create(cls, params: SyntheticSAEParams) -> SyntheticSAEWorld:
        p = params.validate()
        rng = np.random.default_rng(np.random.SeedSequence([p.seed, 0]))
        n_feat = p.features
        vectors = rng.standard_normal((n_feat, p.dim))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        direction = rng.standard_normal(p.dim)
        bias = p.bias * direction / np.linalg.norm(direction)
        probs = zipf_probabilities(n_feat, p.zipf, p.p_max, p.p_min)
        mu = np.linspace(p.mu_start, p.mu_end, n_feat)
        sigma = np.abs(p.sigma_mean + p.sigma_std * rng.standard_normal(n_feat))
        corr = p.corr_scale * rng.standard_normal((n_feat, p.corr_rank))
        if p.corr_rank and float(np.max(np.einsum("ij,ij->i", corr, corr))) >= 1.0:
            raise ParameterError(
                f"synthetic-sae data: corr_scale {p.corr_scale} is too large for corr_rank "
                f"{p.corr_rank} (a feature's correlation loadings reach a variance >= 1)"
            )
        parent = np.full(n_feat, -1, dtype=np.int64)
        exclusive_parent = np.zeros(n_feat, dtype=bool)
        q = probs.copy()
        sizes, start = p.level_sizes, 0
        for level in range(len(sizes) - 1):
            parents = np.arange(start, start + sizes[level])
            children_start = start + sizes[level]
            excl = rng.random(len(parents)) < p.exclusive
            exclusive_parent[parents] = excl
            children = children_start + np.arange(sizes[level + 1])
            parent[children] = np.repeat(parents, p.branching)
            # compensate: each child's marginal ≈ p_i given its parent's marginal p_parent
            target = (probs[children] / probs[parent[children]]).reshape(-1, p.branching)
            qc = np.minimum(target, 1.0)
            for _ in range(200):
                share = _inverse_share(qc)
                new = np.where(excl[:, None], np.minimum(target / share, 1.0), qc)
                if np.max(np.abs(new - qc)) < 1e-12:
                    break
                qc = new
            q[children] = qc.ravel()
            start = children_start
        return cls(
            params=p,
            feature_vectors=vectors.astype(np.float32),
            bias=bias.astype(np.float32),
            probabilities=probs,
            sample_probabilities=q,
            mu=mu,
            sigma=sigma,
            parent=parent,
            exclusive_parent=exclusive_parent,
            corr_factor=corr,
        )

    @cached_property
    def _thresholds(self) -> np.ndarray:
        from scipy.special import ndtri

        return ndtri(1.0 - np.clip(self.sample_probabilities, 0.0, 1.0))

    @property
    def dictionary(self) -> np.ndarray:
        """The ground truth as ``dim × features`` unit columns (:mod:`sparsekit.data.recovery`'s
        convention; :attr:`feature_vectors` holds the same as rows)."""
        return self.feature_vectors.T

    # -- sampling ---------------------------------------------------------------------------

    def _firing(self, rows: int, rng: np.random.Generator) -> np.ndarray:
        p = self.params
        n_feat = p.features
        if p.corr_rank and p.corr_scale > 0:
            g = rng.standard_normal((rows, n_feat), dtype=np.float32)
            scale = np.sqrt(1.0 - np.einsum("ij,ij->i", self.corr_factor, self.corr_factor))
            g *= scale.astype(np.float32)
            zeta = rng.standard_normal((rows, p.corr_rank))
            g += (zeta @ self.corr_factor.T).astype(np.float32)
            fire = g > self._thresholds.astype(np.float32)
        else:
            fire = rng.random((rows, n_feat), dtype=np.float32) < self.sample_probabilities
        sizes, start = p.level_sizes, 0
        for level in range(len(sizes) - 1):
            parents = np.arange(start, start + sizes[level])
            children = start + sizes[level] + np.arange(sizes[level + 1])
            block = fire[:, children].reshape(rows, len(parents), p.branching)
            block &= fire[:, parents][:, :, None]
            excl = self.exclusive_parent[parents]
            if excl.any():
                sub = block[:, excl]  # (rows, exclusive parents, branching)
                keys = np.where(sub, rng.random(sub.shape, dtype=np.float32), -1.0)
                winner = keys.argmax(axis=2)
                keep = np.zeros_like(sub)
                np.put_along_axis(keep, winner[:, :, None], True, axis=2)
                block[:, excl] = sub & keep
            fire[:, children] = block.reshape(rows, -1)
            start += sizes[level]
        return fire

    def sample_codes(self, rows: int, rng: np.random.Generator) -> np.ndarray:
        """``rows × features`` float32 magnitudes ``a`` (0 where a feature is off)."""
        fire = self._firing(rows, rng)
        r, c = np.nonzero(fire)
        values = self.mu[c] + self.sigma[c] * rng.standard_normal(len(c))
        codes = np.zeros((rows, self.params.features), dtype=np.float32)
        codes[r, c] = np.maximum(values, 0.0)
        return codes

    def sample(self, n: int, stream: int, *, return_codes: bool = False) -> Any:
        """``n`` signals (float32, ``n × dim``) from random stream ``stream`` of the world
        (stream 1 is the training split, 2 the test split). Chunk ``c`` (rows ``c·CHUNK`` to
        ``(c+1)·CHUNK``) is always generated whole from its own seed ``(seed, stream, c)``, so
        the first ``m`` rows are the same for every ``n >= m``. With ``return_codes`` also the
        true magnitudes (``n × features``, float32)."""
        p = self.params
        out = np.empty((n, p.dim), dtype=np.float32)
        codes_all = np.empty((n, p.features), dtype=np.float32) if return_codes else None
        for chunk, start in enumerate(range(0, n, CHUNK)):
            rng = np.random.default_rng(np.random.SeedSequence([p.seed, stream, chunk]))
            rows = min(CHUNK, n - start)
            # whole chunks (draws and product), so that prefixes agree bit for bit
            codes = self.sample_codes(CHUNK, rng)
            signals = codes @ self.feature_vectors
            signals += self.bias
            out[start : start + rows] = signals[:rows]
            if codes_all is not None:
                codes_all[start : start + rows] = codes[:rows]
        return (out, codes_all) if return_codes else out

    def split_size(self, split: str) -> int:
        """Rows of a split: ``n`` for ``"train"``, ``n // 10`` (at least 1) for ``"test"``."""
        return self.params.n if split == "train" else max(1, self.params.n // 10)

    def dataset(self, split: str = "train", n: int | None = None) -> SyntheticSAEDataset:
        """The training split (``n`` rows, default ``params.n``) or the test split (default
        ``n // 10`` rows, an independent stream) as a data set, with ``ground_truth`` set."""
        if split not in ("train", "test"):
            raise ParameterError(f"unknown split {split!r} (use 'train' or 'test')")
        if n is None:
            n = self.split_size(split)
        signals = self.sample(n, 1 if split == "train" else 2)
        name = NAME if split == "train" else f"{NAME}-test"
        source = {"kind": NAME, "split": split, **asdict(self.params)}
        return SyntheticSAEDataset(signals, name=name, source=source, truth=self.dictionary)

    def true_l0(self, n: int = 20_000, stream: int = 3) -> float:
        """The mean number of active features per sample, estimated from ``n`` samples."""
        rng = np.random.default_rng(np.random.SeedSequence([self.params.seed, stream]))
        total = 0
        for start in range(0, n, CHUNK):
            total += int(self._firing(min(CHUNK, n - start), rng).sum())
        return total / n


def make_synthetic_sae(**params: Any) -> SyntheticSAEWorld:
    """A ``synthetic-sae`` world from keyword parameters (see :class:`SyntheticSAEParams`)."""
    unknown = sorted(set(params) - set(_KEYS))
    if unknown:
        raise ParameterError(
            f"synthetic-sae data: unknown parameter(s) {', '.join(unknown)} (use "
            f"{', '.join(_KEYS)})"
        )
    return SyntheticSAEWorld.create(SyntheticSAEParams(**params))
