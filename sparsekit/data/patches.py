"""Natural-image patches, the classic sparse-coding data (Olshausen & Field 1996).

The photographs are the ones scikit-image ships inside its wheel (``skimage.data``: no
network access); ``pip install 'sparsekit[patches]'`` installs it. Each photograph is

1. turned to grey (luminance ``0.2125 R + 0.7154 G + 0.0721 B``) in [0, 1];
2. whitened as Olshausen & Field (1997, "Sparse coding with an overcomplete basis set: a
   strategy employed by V1?", Vision Research 37) did: its 2-D spectrum is multiplied by
   ``R(f) = |f| exp(-(|f|/f0)⁴)`` with ``f0 = 0.4`` of the Nyquist frequency, which
   flattens the 1/f amplitude spectrum of natural scenes and cuts the noisy corner
   frequencies; then scaled to unit variance;

and ``n`` square patches of ``size``×``size`` pixels are cut at random places (every
photograph in proportion to its area). Each patch is then contrast-normalised: its mean is
removed and it is divided by ``sqrt(var + ε)``, with ε one tenth of the average patch
variance (a floor, so that flat patches are not blown up into noise).

``range="unit"`` further clips each value to ±3 standard deviations and maps it to
[0.1, 0.9], as CS294A's sparse-autoencoder exercise does for its sigmoid-output
autoencoders (``plain``, ``l2``, ``kl``); the default ``range="none"`` keeps the zero-mean
patches, for linear-output methods.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsekit.data.dataset import ArrayDataset
from sparsekit.errors import DataError, ParameterError

#: The photographs of ``skimage.data`` used (functions of that module; all bundled in the
#: scikit-image wheel). Textures (grass, gravel, brick) and scenes with people, animals,
#: objects and a landscape.
PHOTOGRAPHS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "grass", "gravel", "brick")
RANGES = ("none", "unit")
_INTS = {"size", "n", "seed"}


def _skimage_data() -> Any:
    try:
        import skimage.data
    except ImportError:
        raise DataError(
            "patches: the photographs come with scikit-image; pip install 'sparsekit[patches]'"
        ) from None
    return skimage.data


def grey(image: np.ndarray) -> np.ndarray:
    """A photograph (h×w or h×w×3, integer or float) as float64 luminance in [0, 1]."""
    img = np.asarray(image)
    scale = float(np.iinfo(img.dtype).max) if img.dtype.kind in "ui" else 1.0
    img = img.astype(np.float64) / scale
    if img.ndim == 3:
        img = img[..., :3] @ np.array([0.2125, 0.7154, 0.0721])
    return img


def whiten(image: np.ndarray, f0: float = 0.4) -> np.ndarray:
    """Olshausen & Field's whitening: spectrum × |f|·exp(−(|f|/(f0·f_nyq))⁴), unit variance.

    Frequencies are in cycles per pixel (Nyquist 0.5), so the cut-off is ``f0 * 0.5``.
    """
    h, w = image.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    filt = f * np.exp(-((f / (f0 * 0.5)) ** 4))
    out = np.real(np.fft.ifft2(np.fft.fft2(image - image.mean()) * filt))
    return out / out.std()


def _photographs(names: tuple[str, ...]) -> list[np.ndarray]:
    data = _skimage_data()
    images = []
    for name in names:
        try:
            images.append(grey(getattr(data, name)()))
        except Exception as exc:  # a broken or partial scikit-image installation
            raise DataError(f"patches: cannot read skimage.data.{name} ({exc})") from None
    return images


def make_patches(
    size: int = 12,
    n: int = 50000,
    seed: int = 0,
    range: str = "none",
    photographs: tuple[str, ...] = PHOTOGRAPHS,
) -> ArrayDataset:
    """``n`` whitened, contrast-normalised ``size``×``size`` patches (float32, n×size²)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ParameterError(f"patches: size must be an integer >= 2, got {size!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ParameterError(f"patches: n must be a positive integer, got {n!r}")
    if range not in RANGES:
        raise ParameterError(f"patches: range must be one of {', '.join(RANGES)}, got {range!r}")
    images = [whiten(img) for img in _photographs(photographs)]
    small = [img.shape for img in images if min(img.shape) < size]
    if small:
        raise ParameterError(f"patches: size {size} is larger than a photograph {small[0]}")
    rng = np.random.default_rng(seed)
    weights = np.array([(h - size + 1) * (w - size + 1) for h, w in (i.shape for i in images)])
    which = rng.choice(len(images), size=n, p=weights / weights.sum())
    out = np.empty((n, size * size), dtype=np.float64)
    for i, img in enumerate(images):
        rows = np.flatnonzero(which == i)
        ys = rng.integers(0, img.shape[0] - size + 1, size=len(rows))
        xs = rng.integers(0, img.shape[1] - size + 1, size=len(rows))
        for r, y, x in zip(rows, ys, xs, strict=True):
            out[r] = img[y : y + size, x : x + size].ravel()
    out -= out.mean(axis=1, keepdims=True)
    var = out.var(axis=1, keepdims=True)
    out /= np.sqrt(var + 0.1 * var.mean())
    if range == "unit":
        limit = 3.0 * out.std()
        np.clip(out, -limit, limit, out=out)
        out = 0.5 + 0.4 * out / limit
    name = f"patches:size={size},n={n},seed={seed}" + (f",range={range}" if range != "none" else "")
    return ArrayDataset(out.astype(np.float32), name=name, image_shape=(size, size))


def parse_patches(spec: str) -> dict[str, Any]:
    """``"patches:size=16,n=20000,seed=1,range=unit"`` -> keyword arguments."""
    _, _, rest = spec.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in _INTS | {"range"}:
            raise ParameterError(
                f"bad patches option {item!r} (use size, n, seed, range as key=value)"
            )
        if key in _INTS:
            try:
                kwargs[key] = int(value)
            except ValueError:
                raise ParameterError(f"bad value in patches option {item!r}") from None
        else:
            kwargs[key] = value.strip()
    return kwargs


# -- what the learned filters look like ----------------------------------------------------


def orientation_selectivity(filters: Any, shape: tuple[int, int]) -> np.ndarray:
    """Per filter, how much of its spectral power lies at one orientation, in [0, 1].

    With P(f) the power spectrum of the filter (an h×w image, its mean removed) and θ(f) the
    orientation of frequency f, ``OSI = |Σ_f P(f) e^{2iθ(f)}| / Σ_f P(f)``: one minus the
    circular variance of the orientations weighted by power (θ doubled, since θ and θ+π are
    the same orientation). An oriented edge or grating gives close to 1, a centre-surround
    blob or white noise close to 0.
    """
    w = np.asarray(filters, dtype=np.float64).reshape(-1, *shape)
    w = w - w.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(w)) ** 2
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    phase = np.exp(2j * np.arctan2(fy, fx))
    total = power.sum(axis=(1, 2))
    resultant = np.abs((power * phase).sum(axis=(1, 2)))
    return np.where(total > 0, resultant / np.where(total > 0, total, 1.0), 0.0)


def localisation(filters: Any, shape: tuple[int, int]) -> np.ndarray:
    """Per filter, how concentrated its energy is in space: at most 1, 0 for no concentration.

    With the filter's energy w² as a distribution over pixel positions, ``σ`` the root mean
    square distance of that distribution from its centroid and ``σ_u`` the same for a filter
    of equal energy everywhere, ``L = 1 − σ/σ_u``: 0 for a filter spread evenly over the
    whole patch, close to 1 for one concentrated on a few pixels, below 0 when the energy
    sits in the corners and along the border (a grating's edges weigh as much as its
    centre, so gratings and principal components score about 0).
    """
    w = np.asarray(filters, dtype=np.float64).reshape(-1, *shape)
    energy = w * w
    total = energy.sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    ys = np.arange(shape[0])[None, :, None]
    xs = np.arange(shape[1])[None, None, :]
    cy = (energy * ys).sum(axis=(1, 2)) / safe
    cx = (energy * xs).sum(axis=(1, 2)) / safe
    spread = (energy * ((ys - cy[:, None, None]) ** 2 + (xs - cx[:, None, None]) ** 2)).sum(
        axis=(1, 2)
    ) / safe
    uniform = (shape[0] ** 2 - 1) / 12 + (shape[1] ** 2 - 1) / 12
    return np.where(total > 0, 1.0 - np.sqrt(spread / uniform), 0.0)
