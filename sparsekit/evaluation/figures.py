"""Figures of a sparse-coding run, drawn from plain NumPy arrays.

* :func:`filter_grid` / :func:`save_filter_grid`: every hidden unit's weights as a small image,
  contrast-normalised the way CS294A's ``display_network`` does it (stray outlying pixels
  clipped) (:func:`filter_tiles` and
  :func:`tile_grid` are its two halves: the tiles, and their layout).
* :func:`save_progression` and :class:`FrameRecorder`: how those filters change over training,
  as an animated GIF (or APNG).
* :func:`reconstruction_grid` / :func:`save_reconstructions`: inputs above their
  reconstructions.
* :func:`plot_curves`: training metrics against epoch (matplotlib, imported only when called).
* :func:`plot_methods`: the same metric of several runs on one plot (one line per method).
* :func:`plot_tradeoff` / :func:`plot_fve_l0`: variance explained against L0, one point per
  method (a comparison) or one line per method (a sweep's settings).

Inputs are NumPy arrays; a CuPy array is copied to the host with ``.get()`` as a convenience,
without importing CuPy. Images are returned as 2-D ``uint8`` arrays (0 = black, 255 = white) and
written with Pillow. Nothing here imports matplotlib, typer or rich at import time.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sparsekit.errors import ParameterError
from sparsekit.files import atomic_path

__all__ = [
    "PALETTE",
    "method_colours",
    "methods_figure",
    "plot_methods",
    "BACKGROUND",
    "RECON_BORDER",
    "RECON_SEPARATOR",
    "FrameRecorder",
    "filter_grid",
    "filter_tiles",
    "frame_indices",
    "plot_curves",
    "plot_fve_l0",
    "plot_tradeoff",
    "reconstruction_grid",
    "save_filter_grid",
    "save_progression",
    "save_png",
    "save_reconstructions",
    "tile_grid",
]

#: Grey level of the border and of unused tiles in :func:`filter_grid`: black, like the ``-1``
#: background of ``display_network``.
BACKGROUND = 0
#: Grey level of the border between tiles in :func:`reconstruction_grid` (mid grey, so tile
#: edges show against both dark and bright images).
RECON_BORDER = 128
#: Grey level of the line between successive (originals, reconstructions) row pairs.
RECON_SEPARATOR = 255


# --------------------------------------------------------------------------- helpers


def _host(array: Any, what: str) -> np.ndarray:
    """``array`` as a NumPy array; CuPy arrays are copied to the host."""
    if type(array).__module__.split(".")[0] == "cupy" and hasattr(array, "get"):
        array = array.get()
    try:
        return np.asarray(array)
    except TypeError as exc:  # pragma: no cover - exotic array types
        raise ParameterError(f"{what}: cannot convert {type(array).__name__} to NumPy") from exc


def _int_at_least(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_image_shape(image_shape: Any, dim: int, what: str) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in image_shape)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"image_shape must be (height, width), got {image_shape!r}") from exc
    if h < 1 or w < 1:
        raise ParameterError(f"image_shape must be positive, got {(h, w)}")
    if h * w != dim:
        raise ParameterError(
            f"{what} have {dim} values per row but image_shape {h}x{w} needs {h * w}"
        )
    return h, w


def _rows_2d(array: Any, what: str) -> np.ndarray:
    a = _host(array, what)
    if a.ndim != 2:
        raise ParameterError(f"{what} must be a 2-D array (n, height*width), got shape {a.shape}")
    if a.shape[0] == 0:
        raise ParameterError(f"{what} is empty: nothing to draw")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ParameterError(f"{what} must be real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.all(np.isfinite(a)):
        raise ParameterError(f"{what} contain NaN or infinite values (did training diverge?)")
    return a


def _enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor."""
    if scale == 1:
        return image
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def _prepare_path(path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``[lo, hi]`` linearly onto 0..255, rounding to nearest and clipping."""
    scaled = (values - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)



# --------------------------------------------------------------------------- colours and axes

#: A qualitative palette of 20 well-separated colours: matplotlib's tab10, then ten more
#: (darker, lighter or otherwise distinct hues), so a comparison of every built-in method
#: (eleven) never repeats a colour, as tab10 alone did (plain and relu-l1 were both blue).
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#000080", "#aa6e28", "#008080", "#e6194b", "#3cb44b",
    "#f032e6", "#808000", "#4b0082", "#ff69b4", "#2f4f4f",
)  # fmt: skip
#: The built-in methods, each with its own palette entry whatever else a chart shows.
_FIXED_COLOURS = (
    "plain", "relu-l1", "l2", "kl", "ksparse", "arora",
    "topk", "batchtopk", "jumprelu", "gated", "matryoshka",
)  # fmt: skip


def method_colours(names: Sequence[str]) -> dict[str, str]:
    """A distinct colour for every name, the same for a built-in method in every chart.

    Built-in methods take fixed entries of :data:`PALETTE`; other names (plugins, sweep
    settings) take the free entries in sorted order, then hues spaced by the golden angle
    (never equal) once the palette is spent.
    """
    import colorsys

    colours = {n: PALETTE[_FIXED_COLOURS.index(n)] for n in names if n in _FIXED_COLOURS}
    free = [c for c in PALETTE if c not in colours.values()]
    others = sorted({n for n in names if n not in colours})
    for i, name in enumerate(others):
        if i < len(free):
            colours[name] = free[i]
        else:
            r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.8)
            colours[name] = f"#{round(255 * r):02x}{round(255 * g):02x}{round(255 * b):02x}"
    return colours


def _epoch_ticks(ax: Any, last_epoch: float, *, log: bool) -> None:
    """Whole-epoch ticks written as plain integers: 1, 2, 5, 10, ... on a log axis (never
    ``2×10⁰``), every epoch when there are few; no fractional epochs (1.2, 1.4) on a linear
    one."""
    from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator, StrMethodFormatter

    if not log:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return
    last = max(1, math.ceil(last_epoch))
    if last <= 10:
        ticks = list(range(1, last + 1))
    else:
        ticks = [m * 10**e for e in range(len(str(last))) for m in (1, 2, 5) if m * 10**e <= last]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:.0f}"))
    ax.xaxis.set_minor_locator(NullLocator())


def _plain_numbers(axis: Any) -> None:
    """Label a log axis 0.5, 2, 10 rather than 5×10⁻¹, 2×10⁰, 10¹; minor ticks (mantissa 2, 3,
    4, 6) only where the axis spans little more than a decade, so that they never crowd it."""
    from matplotlib.ticker import FuncFormatter

    def minor(value: float, _pos: Any) -> str:
        low, high = sorted(axis.get_view_interval())
        if low <= 0 or math.log10(high / low) > 1.2:
            return ""
        mantissa = round(value / 10 ** math.floor(math.log10(value) + 1e-9), 6)
        return f"{value:g}" if mantissa in (2, 3, 4, 6) else ""

    axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(minor))


# --------------------------------------------------------------------------- filters


def filter_grid(
    filters: np.ndarray,
    image_shape: tuple[int, int],
    *,
    cols: int | None = None,
    border: int = 1,
    scale: int = 1,
    max_filters: int | None = None,
) -> np.ndarray:
    """Tile the rows of ``filters`` into one grey-level image.

    ``filters`` has shape ``(n_filters, h*w)``: one hidden unit's weights per row, reshaped
    row-major to ``image_shape = (h, w)``. Contrast is normalised as in CS294A's
    ``display_network``:

    1. subtract the global mean of **all** weights in ``filters`` (computed before
       ``max_filters`` drops any rows, so a tile looks the same whatever is shown);
    2. divide each filter by its own scale, so every filter spans as much of ``[-1, 1]`` as
       it can (a filter that is all zero after step 1 stays 0, mid grey). The scale is the
       largest absolute value, as in ``display_network``, unless a few stray pixels stand
       far above the rest: then it is ``max(6 × median, 95th percentile)`` of the filter's
       absolute values and the stray pixels are clipped (:func:`_tile_scale`), so that
       weights Adam grew on pixels that never see ink do not leave the tile blank;
    3. map ``[-1, 1]`` linearly to grey levels 0..255 (rounded, clipped): -1 is black, 0 is
       mid grey (128), +1 is white.

    Tiles are laid out row by row in ``rows x cols`` cells, ``cols = ceil(sqrt(n))`` by default
    (never more than ``n``) and ``rows = ceil(n / cols)``, with ``border`` pixels of
    :data:`BACKGROUND` (black) between tiles and around the edge. Cells past the last filter are
    background too. The unscaled image is ``rows*h + (rows+1)*border`` by
    ``cols*w + (cols+1)*border`` pixels; ``scale`` then enlarges every pixel (borders included)
    to a ``scale x scale`` block.

    Args:
        filters: weights, shape ``(n_filters, h*w)``.
        image_shape: ``(h, w)`` of one filter.
        cols: tiles per row (default: near-square grid).
        border: border width in pixels, ``>= 0``.
        scale: integer enlargement factor, ``>= 1``.
        max_filters: draw only the first ``max_filters`` filters.

    Returns:
        A 2-D ``uint8`` array.
    """
    a = _rows_2d(filters, "filters")
    h, w = _check_image_shape(image_shape, a.shape[1], "filters")
    return tile_grid(_normalised_tiles(a, h, w, max_filters), cols=cols, border=border, scale=scale)


def filter_tiles(
    filters: np.ndarray, image_shape: tuple[int, int], *, max_filters: int | None = None
) -> np.ndarray:
    """The first ``max_filters`` rows of ``filters`` as ``(n, h, w)`` ``uint8`` tiles,
    contrast-normalised exactly as :func:`filter_grid` draws them (global mean over *all*
    rows). ``tile_grid(filter_tiles(W, shape), ...)`` equals ``filter_grid(W, shape, ...)``;
    a run keeps these tiles for its progression animation.
    """
    a = _rows_2d(filters, "filters")
    h, w = _check_image_shape(image_shape, a.shape[1], "filters")
    return _normalised_tiles(a, h, w, max_filters)


def _normalised_tiles(a: np.ndarray, h: int, w: int, max_filters: int | None) -> np.ndarray:
    centred = a - a.mean()
    if max_filters is not None:
        centred = centred[: _int_at_least(max_filters, "max_filters")]
    n = centred.shape[0]

    # Rounding in the mean can leave a constant filter a few ulps away from zero; treat
    # anything that small (relative to the largest weight) as an exactly zero filter.
    tiny = 64 * np.finfo(np.float64).eps * max(float(np.max(np.abs(a))), 1e-300)
    peak = _tile_scale(centred, tiny)
    zero = peak <= tiny
    normalised = np.where(zero, 0.0, centred / np.where(zero, 1.0, peak))
    return _to_uint8(normalised, -1.0, 1.0).reshape(n, h, w)


#: A tile's scale is at most this many times the median |weight| of the tile (see
#: :func:`_tile_scale`): about the largest weight of a filter without outliers (a trained
#: MNIST filter's largest |weight| is ~6 times its median), far below a stray pixel's.
OUTLIER_MEDIANS = 6.0
#: ... and at least this percentile of the tile's |weights|, so that a filter that is mostly
#: flat (median near zero) is not saturated everywhere it is not.
OUTLIER_PERCENTILE = 95.0


def _tile_scale(centred: np.ndarray, tiny: float) -> np.ndarray:
    """Per row, the |weight| drawn as black or white: min(max, max(6 × median, 95th pct)).

    CS294A divides by the largest |weight|. Pixels that (almost) never see ink break that:
    Adam grows their weights from rare, tiny gradients, and over 500 epochs a few such
    pixels at the border outweigh the strokes, leaving plain's grid almost blank. A few
    percent of stray pixels move neither the median nor the 95th percentile, so they are
    clipped (drawn black or white) while the filter keeps its contrast; a filter without
    such outliers (largest ≤ 6 × median) is drawn exactly as CS294A draws it, and so is one
    whose robust scale is nil (a single inked pixel: ``tiny`` or less).
    """
    magnitude = np.abs(centred)
    peak = magnitude.max(axis=1, keepdims=True)
    robust = np.maximum(
        OUTLIER_MEDIANS * np.median(magnitude, axis=1, keepdims=True),
        np.percentile(magnitude, OUTLIER_PERCENTILE, axis=1, keepdims=True),
    )
    return np.where(robust > tiny, np.minimum(peak, robust), peak)


def tile_grid(
    tiles: np.ndarray, *, cols: int | None = None, border: int = 1, scale: int = 1
) -> np.ndarray:
    """Lay out ``(n, h, w)`` ``uint8`` tiles as :func:`filter_grid` does: row by row,
    ``cols`` per row (default near-square), ``border`` pixels of :data:`BACKGROUND` between
    and around them, every pixel enlarged ``scale`` times."""
    tiles = np.asarray(tiles)
    if tiles.ndim != 3 or tiles.dtype != np.uint8 or len(tiles) == 0:
        raise ParameterError(
            f"tiles must be a non-empty (n, h, w) uint8 array, got shape {tiles.shape} "
            f"dtype {tiles.dtype}"
        )
    border = _int_at_least(border, "border", minimum=0)
    scale = _int_at_least(scale, "scale")
    n = len(tiles)
    cols = min(n, _int_at_least(cols, "cols")) if cols is not None else math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    return _enlarge(_tile(tiles, rows, cols, border, BACKGROUND), scale)


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a 2-D ``uint8`` image to ``path`` as a PNG, atomically (parents created)."""
    from PIL import Image


    p = _prepare_path(path)
    with atomic_path(p) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return p


def _tile(tiles: np.ndarray, rows: int, cols: int, border: int, fill: int) -> np.ndarray:
    """Place ``tiles`` (n, h, w) row by row on a ``fill`` canvas with ``border`` gaps."""
    n, h, w = tiles.shape
    out = np.full(
        (rows * h + (rows + 1) * border, cols * w + (cols + 1) * border), fill, dtype=np.uint8
    )
    for k in range(n):
        r, c = divmod(k, cols)
        y = border + r * (h + border)
        x = border + c * (w + border)
        out[y : y + h, x : x + w] = tiles[k]
    return out


def save_filter_grid(
    path: str | Path,
    filters: np.ndarray,
    image_shape: tuple[int, int],
    **kw: Any,
) -> Path:
    """Write :func:`filter_grid` ``(filters, image_shape, **kw)`` to ``path`` as a PNG.

    Parent directories are created. Returns the path written.
    """
    grid = filter_grid(filters, image_shape, **kw)
    return save_png(path, grid)


# --------------------------------------------------------------------------- progression


def frame_indices(n_frames: int, max_frames: int) -> list[int]:
    """Which of ``n_frames`` frames to keep so that at most ``max_frames`` remain.

    All of them when they fit; otherwise ``max_frames`` evenly spaced indices that always
    include the first (0) and the last (``n_frames - 1``). ``max_frames`` must be at least 2.
    """
    n_frames = _int_at_least(n_frames, "n_frames", minimum=0)
    max_frames = _int_at_least(max_frames, "max_frames", minimum=2)
    if n_frames <= max_frames:
        return list(range(n_frames))
    # The spacing is > 1, so rounding keeps the indices distinct and strictly increasing.
    return [int(i) for i in np.rint(np.linspace(0, n_frames - 1, max_frames))]


def _check_frame(frame: Any, shape: tuple[int, ...] | None) -> np.ndarray:
    f = _host(frame, "frame")
    if f.ndim != 2 or f.dtype != np.uint8:
        raise ParameterError(
            f"frames must be 2-D uint8 images (e.g. from filter_grid), "
            f"got shape {f.shape} dtype {f.dtype}"
        )
    if shape is not None and f.shape != shape:
        raise ParameterError(f"all frames must have the same size: {f.shape} != {shape}")
    return f


def save_progression(
    path: str | Path,
    frames: Sequence[np.ndarray],
    *,
    duration_ms: int = 200,
    max_frames: int = 60,
) -> Path:
    """Write equally sized ``uint8`` grids as an animation that loops forever.

    The format follows the suffix: ``.gif`` writes an animated GIF, ``.png`` an animated PNG
    (APNG); any other suffix is an error. When there are more than ``max_frames`` frames,
    evenly spaced ones are kept (always the first and the last, see :func:`frame_indices`),
    which bounds the file size of long runs. Each frame shows for ``duration_ms`` milliseconds
    (GIF stores hundredths of a second). Pillow merges consecutive identical frames into one
    longer frame, so a run whose filters stopped changing can yield fewer frames.

    Returns the path written.
    """
    from PIL import Image

    if len(frames) == 0:
        raise ParameterError("no frames to save")
    duration_ms = _int_at_least(duration_ms, "duration_ms")
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".gif", ".png"):
        raise ParameterError(f"{p}: the progression must be a .gif or .png (APNG) file")

    first = _check_frame(frames[0], None)
    checked = [first] + [_check_frame(f, first.shape) for f in frames[1:]]
    kept = [checked[i] for i in frame_indices(len(checked), max_frames)]
    images = [Image.fromarray(f) for f in kept]

    p = _prepare_path(p)
    images[0].save(
        p,
        format="GIF" if suffix == ".gif" else "PNG",
        save_all=True,
        append_images=images[1:],
        duration=duration_ms,
        loop=0,
    )
    return p


class FrameRecorder:
    """Collects grids (e.g. one :func:`filter_grid` every few epochs) for an animation.

    Frames are kept in memory as ``uint8`` copies, one byte per pixel: a 400-filter grid of
    8x8 patches (181x181 pixels at scale 1) costs about 33 kB a frame.
    Deciding *when* to record (every N epochs) is up to the caller.

    >>> rec = FrameRecorder()
    >>> rec.add(np.zeros((5, 5), np.uint8))
    >>> len(rec)
    1
    """

    def __init__(self) -> None:
        self._frames: list[np.ndarray] = []

    def add(self, grid: np.ndarray) -> None:
        """Append a copy of ``grid`` (2-D ``uint8``, same size as the frames before it)."""
        shape = self._frames[0].shape if self._frames else None
        self._frames.append(np.array(_check_frame(grid, shape), copy=True))

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def frames(self) -> list[np.ndarray]:
        """All frames recorded so far, oldest first (a new list; the arrays are shared)."""
        return list(self._frames)

    def select(self, max_frames: int) -> list[np.ndarray]:
        """At most ``max_frames`` evenly spaced frames, always the first and the last."""
        return [self._frames[i] for i in frame_indices(len(self._frames), max_frames)]

    def clear(self) -> None:
        """Forget every frame."""
        self._frames.clear()

    def save(self, path: str | Path, *, duration_ms: int = 200, max_frames: int = 60) -> Path:
        """:func:`save_progression` of the recorded frames."""
        return save_progression(path, self._frames, duration_ms=duration_ms, max_frames=max_frames)


# --------------------------------------------------------------------------- reconstructions


def reconstruction_grid(
    originals: np.ndarray,
    reconstructions: np.ndarray,
    image_shape: tuple[int, int],
    *,
    cols: int = 10,
    border: int = 1,
    scale: int = 2,
) -> np.ndarray:
    """Inputs above their reconstructions, as one grey-level image.

    ``originals`` and ``reconstructions`` have the same shape ``(n, h*w)``; row ``i`` of one is
    drawn directly above row ``i`` of the other. Images are laid out ``cols`` per row (never
    more than ``n``) in pairs of rows: a row of originals, then the row of their
    reconstructions. Values are pixel intensities: they are clipped to ``[0, 1]`` and mapped to
    0..255 with no per-image normalisation, so a reconstruction that is too dim *looks* dim.

    Tiles are separated by ``border`` pixels of :data:`RECON_BORDER` (mid grey) and the
    canvas is grey too; between one pair of rows and the next, a line of
    :data:`RECON_SEPARATOR` (white) ``max(1, border)`` pixels thick, with a border on each side,
    marks where the next pair starts. Unscaled, the image is ``cols*w + (cols+1)*border`` wide
    and ``border + pairs*(2*h + 2*border) + (pairs-1)*(max(1, border) + border)`` tall;
    ``scale`` enlarges each pixel to a ``scale x scale`` block.

    Returns:
        A 2-D ``uint8`` array.
    """
    orig = _rows_2d(originals, "originals")
    recon = _rows_2d(reconstructions, "reconstructions")
    if orig.shape != recon.shape:
        raise ParameterError(
            f"originals {orig.shape} and reconstructions {recon.shape} must have the same shape"
        )
    h, w = _check_image_shape(image_shape, orig.shape[1], "images")
    cols = _int_at_least(cols, "cols")
    border = _int_at_least(border, "border", minimum=0)
    scale = _int_at_least(scale, "scale")

    n = orig.shape[0]
    cols = min(cols, n)
    pairs = math.ceil(n / cols)
    sep = max(1, border)
    width = cols * w + (cols + 1) * border
    height = border + pairs * (2 * h + 2 * border) + (pairs - 1) * (sep + border)
    out = np.full((height, width), RECON_BORDER, dtype=np.uint8)

    orig_tiles = _to_uint8(np.clip(orig, 0.0, 1.0), 0.0, 1.0).reshape(n, h, w)
    recon_tiles = _to_uint8(np.clip(recon, 0.0, 1.0), 0.0, 1.0).reshape(n, h, w)
    y = border
    for p in range(pairs):
        for row_tiles in (orig_tiles, recon_tiles):
            for c, k in enumerate(range(p * cols, min(n, (p + 1) * cols))):
                x = border + c * (w + border)
                out[y : y + h, x : x + w] = row_tiles[k]
            y += h + border
        if p < pairs - 1:
            out[y : y + sep, :] = RECON_SEPARATOR
            y += sep + border
    return _enlarge(out, scale)


def save_reconstructions(
    path: str | Path,
    originals: np.ndarray,
    reconstructions: np.ndarray,
    image_shape: tuple[int, int],
    **kw: Any,
) -> Path:
    """Write :func:`reconstruction_grid` to ``path`` as a PNG; returns the path."""
    grid = reconstruction_grid(originals, reconstructions, image_shape, **kw)
    return save_png(path, grid)


# --------------------------------------------------------------------------- curves

_TITLES = {
    "loss": "Training loss",
    "mse": "Reconstruction error (MSE)",
    "mean_active": "Mean active units",
    "seconds": "Seconds per epoch",
}


def _as_float(value: Any) -> float | None:
    """``value`` as a float (inf becomes NaN, a gap in the curve); ``None`` if not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else math.nan


def _series(metrics: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of ``key`` over the rows that have a number for it; a row without
    ``"epoch"`` counts as epoch ``position + 1``."""
    xs: list[float] = []
    ys: list[float] = []
    for i, row in enumerate(metrics):
        y = _as_float(row.get(key))
        if y is None:
            continue
        x = _as_float(row.get("epoch", i + 1))
        xs.append(float(i + 1) if x is None or math.isnan(x) else x)
        ys.append(y)
    return xs, ys


def plot_curves(
    metrics: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    keys: Sequence[str] = ("loss", "mean_active", "seconds"),
) -> Path:
    """Plot each metric in ``keys`` against epoch, one subplot per metric, into a PNG.

    ``metrics`` is one mapping per epoch, e.g. ``{"epoch": 1, "loss": 0.3, "mean_active": 12.5,
    "seconds": 4.2}``; a row without ``"epoch"`` counts as epoch ``position + 1``. A key is
    plotted from the rows that have a numeric value for it and skipped when no row has one;
    non-finite values show as gaps. Uses matplotlib's Agg canvas directly (no pyplot, no
    change to the global backend); matplotlib is imported only here.

    Returns the path written.
    """
    if len(metrics) == 0:
        raise ParameterError("no metrics to plot")
    series: list[tuple[str, list[float], list[float]]] = []
    for key in keys:
        xs, ys = _series(metrics, key)
        if ys:
            series.append((key, xs, ys))
    if not series:
        raise ParameterError(f"none of the keys {list(keys)} appear in the metrics")

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # One row for up to three curves, then a near-square grid (2x2 for four).
    ncols = len(series) if len(series) <= 3 else math.ceil(math.sqrt(len(series)))
    nrows = math.ceil(len(series) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (key, xs, ys) in zip(axes, series, strict=False):
        ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, linewidth=1.5)
        ax.set_title(_TITLES.get(key, key.replace("_", " ").capitalize()))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        _epoch_ticks(ax, max(xs), log=False)
    for ax in axes[len(series) :]:
        ax.set_visible(False)

    p = _prepare_path(path)
    fig.savefig(p, format="png")
    return p


def plot_methods(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    *,
    keys: Sequence[str] = ("loss", "mse"),
    log_epochs: bool = True,
    log_values: bool = False,
) -> Path | None:
    """One subplot per metric in ``keys``, one line per run of ``histories`` (name -> the
    per-epoch metrics), into a PNG; ``None`` when no run has any of the keys.

    Logarithmic epochs (the default) show the first epochs, where most of the change
    happens, beside the long tail of a 500-epoch run. Every method has its own colour
    (:func:`method_colours`) and the one legend stands right of the panels.
    """
    fig = methods_figure(histories, keys=keys, log_epochs=log_epochs, log_values=log_values)
    if fig is None:
        return None
    p = _prepare_path(path)
    fig.savefig(p, format="png")
    return p


def methods_figure(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    keys: Sequence[str] = ("loss", "mse"),
    log_epochs: bool = True,
    log_values: bool = False,
) -> Any:
    """The matplotlib ``Figure`` :func:`plot_methods` saves (``None`` when nothing to draw)."""
    panels = []
    for key in keys:
        lines = []
        for name, metrics in histories.items():
            xs, ys = _series(metrics, key)
            if ys:
                lines.append((name, xs, ys))
        if lines:
            panels.append((key, lines))
    if not panels:
        return None

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Big enough to read at full page width, the legend beside the panels (outside the axes)
    # so that it never covers a line, whatever the number of methods.
    fig = Figure(figsize=(6.0 * len(panels) + 1.8, 4.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    colours = method_colours(list(histories))
    for ax, (key, lines) in zip(axes, panels, strict=True):
        for name, xs, ys in lines:
            ax.plot(xs, ys, linewidth=1.5, label=name, color=colours[name])
        if log_epochs:
            ax.set_xscale("log")
        _epoch_ticks(ax, max(max(xs) for _, xs, _ in lines), log=log_epochs)
        if log_values and all(y > 0 for _, _, ys in lines for y in ys if not math.isnan(y)):
            ax.set_yscale("log")
            _plain_numbers(ax.yaxis)
        ax.set_title(_TITLES.get(key, key.replace("_", " ").capitalize()))
        ax.set_xlabel("epoch (log scale)" if log_epochs else "epoch")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3, which="both")
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize="small")
    return fig


# --------------------------------------------------------------------------- L0 against fve


def plot_tradeoff(
    points: Sequence[tuple[str, float, float]],
    out: str | Path | io.BytesIO,
    *,
    title: str = "Variance explained against L0",
) -> str | Path | io.BytesIO:
    """Scatter variance explained (y) against L0 (x), one labelled point per method, as PNG.

    ``points`` are ``(name, L0, variance explained)``; ``out`` a path or a binary buffer.
    Uses matplotlib's Agg canvas directly (no pyplot, no change to the global backend).
    """
    if not points:
        raise ParameterError("no (L0, variance explained) points to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colours = method_colours([name for name, _, _ in points])
    for name, l0, fve in points:
        ax.scatter([l0], [fve], s=36, color=colours[name], zorder=3)
        ax.annotate(name, (l0, fve), textcoords="offset points", xytext=(5, 4), fontsize=9)
    ax.set_xlabel("L0 (mean active latents per sample)")
    ax.set_ylabel("variance explained")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if isinstance(out, (str, Path)):
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
        return path
    fig.savefig(out, format="png")
    return out


def plot_fve_l0(
    lines: Mapping[str, Sequence[tuple[float, float]]],
    out: str | Path | io.BytesIO,
    *,
    title: str = "Reconstruction against sparsity (mean over seeds)",
) -> str | Path | io.BytesIO:
    """Variance explained (y) against L0 (x), one line of ``(L0, fve)`` points per name, as
    PNG to a path or a binary buffer (a sweep's settings of each method). Agg canvas only."""
    if not any(lines.values()):
        raise ParameterError("no (L0, variance explained) points to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = method_colours(list(lines))
    for name, xy in sorted(lines.items()):
        xy = sorted(xy)
        ax.plot([p[0] for p in xy], [p[1] for p in xy], marker="o", label=name, color=colours[name])
    ax.set_xlabel("L0: mean active units per sample")
    ax.set_ylabel("fraction of variance explained")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    if isinstance(out, (str, Path)):
        path = _prepare_path(out)
        fig.savefig(path, format="png")
        return path
    fig.savefig(out, format="png")
    return out
