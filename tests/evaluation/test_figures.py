"""Pixel-level checks of the figures in :mod:`sparsekit.render`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sparsekit.errors import ParameterError
from sparsekit.evaluation.figures import (
    BACKGROUND,
    RECON_BORDER,
    RECON_SEPARATOR,
    FrameRecorder,
    filter_grid,
    filter_tiles,
    frame_indices,
    plot_curves,
    reconstruction_grid,
    save_filter_grid,
    save_progression,
    save_reconstructions,
    tile_grid,
)


def tile(grid: np.ndarray, k: int, h: int, w: int, cols: int, border: int = 1) -> np.ndarray:
    """Tile ``k`` of an unscaled filter/row grid."""
    r, c = divmod(k, cols)
    y = border + r * (h + border)
    x = border + c * (w + border)
    return grid[y : y + h, x : x + w]


def border_mask(shape: tuple[int, int], h: int, w: int, border: int = 1) -> np.ndarray:
    """True where a pixel of an unscaled grid is border (not inside any cell)."""
    ys = np.arange(shape[0]) % (h + border) < border
    xs = np.arange(shape[1]) % (w + border) < border
    return ys[:, None] | xs[None, :]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# --------------------------------------------------------------------------- filter_grid


def test_grid_size_ten_filters_of_3x2(rng: np.random.Generator) -> None:
    grid = filter_grid(rng.normal(size=(10, 6)), (3, 2))
    # cols = ceil(sqrt(10)) = 4, rows = 3; 3 rows of height 3 + 4 borders, 4 cols of width 2 + 5.
    assert grid.dtype == np.uint8
    assert grid.shape == (3 * 3 + 4, 4 * 2 + 5) == (13, 13)


@pytest.mark.parametrize(
    ("n", "cols", "rows"), [(1, 1, 1), (4, 2, 2), (5, 3, 2), (16, 4, 4), (17, 5, 4)]
)
def test_grid_default_layout_is_near_square(n: int, cols: int, rows: int) -> None:
    grid = filter_grid(np.arange(n * 12, dtype=float).reshape(n, 12), (4, 3), border=2)
    assert grid.shape == (rows * 4 + (rows + 1) * 2, cols * 3 + (cols + 1) * 2)


def test_grid_explicit_cols_and_no_border(rng: np.random.Generator) -> None:
    assert filter_grid(rng.normal(size=(10, 6)), (3, 2), cols=5, border=0).shape == (6, 10)
    # More columns than filters: the grid is not padded with empty cells.
    assert filter_grid(rng.normal(size=(3, 6)), (3, 2), cols=8).shape == (5, 10)


def test_border_and_unused_cells_are_black(rng: np.random.Generator) -> None:
    grid = filter_grid(rng.normal(size=(10, 6)), (3, 2))
    assert BACKGROUND == 0
    assert np.all(grid[border_mask(grid.shape, 3, 2)] == BACKGROUND)
    for k in (10, 11):  # the two cells after the last filter
        assert np.all(tile(grid, k, 3, 2, cols=4) == BACKGROUND)


def test_tiles_are_row_major_reshapes_in_row_major_order() -> None:
    # Each filter a ramp with a distinct offset; after normalisation the ramp order survives.
    filters = np.zeros((4, 6))
    for k in range(4):
        filters[k, k + 1] = 1.0  # one bright pixel at flat index k+1
    grid = filter_grid(filters, (3, 2))
    for k in range(4):
        t = tile(grid, k, 3, 2, cols=2)
        assert np.unravel_index(np.argmax(t), t.shape) == np.unravel_index(k + 1, (3, 2))


def test_exact_values_after_global_mean_and_per_filter_scaling() -> None:
    filters = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 10.0]])
    mean = filters.mean()  # 2.5
    grid = filter_grid(filters, (2, 2), border=0, cols=2)
    for k in range(2):
        centred = filters[k] - mean
        expected = np.clip(np.rint((centred / np.abs(centred).max() + 1) * 127.5), 0, 255)
        np.testing.assert_array_equal(tile(grid, k, 2, 2, cols=2, border=0).ravel(), expected)


def test_contrast_is_normalised_per_filter(rng: np.random.Generator) -> None:
    f = rng.normal(size=6)
    f -= f.mean()  # zero mean, so the global mean of [f, 1000 f] is zero too
    grid = filter_grid(np.stack([f, 1000.0 * f]), (3, 2))
    np.testing.assert_array_equal(tile(grid, 0, 3, 2, cols=2), tile(grid, 1, 3, 2, cols=2))


def test_peak_pixel_of_each_tile_is_black_or_white(rng: np.random.Generator) -> None:
    filters = rng.normal(size=(9, 20)) * rng.uniform(0.01, 100, size=(9, 1)) + 3.0
    grid = filter_grid(filters, (4, 5))
    centred = filters - filters.mean()
    for k in range(9):
        t = tile(grid, k, 4, 5, cols=3).ravel()
        peak = np.argmax(np.abs(centred[k]))
        assert t[peak] == (255 if centred[k, peak] > 0 else 0)
        assert t.min() >= 0 and t.max() <= 255


def test_global_mean_is_subtracted_before_per_filter_scaling() -> None:
    # A constant filter equal to the global mean becomes all zero -> mid grey; a constant
    # filter above the mean becomes all +1 -> white (display_network behaviour).
    filters = np.array([[1.0] * 4, [3.0] * 4, [2.0] * 4])  # global mean 2
    grid = filter_grid(filters, (2, 2), cols=3)
    assert np.all(tile(grid, 0, 2, 2, cols=3) == 0)
    assert np.all(tile(grid, 1, 2, 2, cols=3) == 255)
    assert np.all(tile(grid, 2, 2, 2, cols=3) == 128)


def test_zero_filter_is_mid_grey(rng: np.random.Generator) -> None:
    f = rng.normal(size=6)
    filters = np.stack([f - f.mean(), np.zeros(6)])
    grid = filter_grid(filters, (3, 2))
    assert np.all(tile(grid, 1, 3, 2, cols=2) == 128)
    # All-zero weights (e.g. freshly zero-initialised) are a uniform grey grid, no NaNs.
    grid = filter_grid(np.zeros((4, 6)), (3, 2))
    assert np.all(grid[~border_mask(grid.shape, 3, 2)] == 128)


def test_constant_weights_with_rounding_in_the_mean_are_mid_grey() -> None:
    grid = filter_grid(np.full((7, 9), 0.1), (3, 3))
    for k in range(7):
        assert np.all(tile(grid, k, 3, 3, cols=3) == 128)


@pytest.mark.parametrize("scale", [2, 3])
def test_scale_enlarges_every_pixel(rng: np.random.Generator, scale: int) -> None:
    filters = rng.normal(size=(10, 6))
    small = filter_grid(filters, (3, 2))
    big = filter_grid(filters, (3, 2), scale=scale)
    assert big.shape == (small.shape[0] * scale, small.shape[1] * scale)
    np.testing.assert_array_equal(big[::scale, ::scale], small)
    np.testing.assert_array_equal(big, np.kron(small, np.ones((scale, scale), np.uint8)))


def test_max_filters_keeps_the_first_tiles_unchanged(rng: np.random.Generator) -> None:
    filters = rng.normal(size=(10, 6)) + 0.5
    full = filter_grid(filters, (3, 2), cols=4)
    part = filter_grid(filters, (3, 2), cols=4, max_filters=4)
    assert part.shape == (5, 13)
    for k in range(4):
        np.testing.assert_array_equal(tile(part, k, 3, 2, 4), tile(full, k, 3, 2, 4))


def test_float32_and_integer_weights_are_accepted() -> None:
    a = np.arange(24).reshape(4, 6)
    np.testing.assert_array_equal(filter_grid(a, (3, 2)), filter_grid(a.astype(np.float32), (3, 2)))


def test_cupy_like_arrays_are_copied_to_host() -> None:
    data = np.arange(12.0).reshape(2, 6)

    class FakeCupyArray:
        def get(self) -> np.ndarray:
            return data

        def __array__(self, *args: object, **kwargs: object) -> np.ndarray:
            raise TypeError("implicit conversion not allowed")

    FakeCupyArray.__module__ = "cupy._core.core"
    np.testing.assert_array_equal(filter_grid(FakeCupyArray(), (3, 2)), filter_grid(data, (3, 2)))


@pytest.mark.parametrize(
    ("filters", "kw"),
    [
        (np.zeros((4, 6)), {"image_shape": (2, 2)}),  # 6 != 4
        (np.zeros(6), {"image_shape": (3, 2)}),  # 1-D
        (np.zeros((0, 6)), {"image_shape": (3, 2)}),  # empty
        (np.array([[np.nan] * 6]), {"image_shape": (3, 2)}),
        (np.zeros((4, 6)), {"image_shape": (3, 2), "scale": 0}),
        (np.zeros((4, 6)), {"image_shape": (3, 2), "border": -1}),
        (np.zeros((4, 6)), {"image_shape": (3, 2), "cols": 0}),
        (np.zeros((4, 6)), {"image_shape": (3, 2), "max_filters": 0}),
    ],
)
def test_bad_input_raises_parameter_error(filters: np.ndarray, kw: dict) -> None:
    with pytest.raises(ParameterError):
        filter_grid(filters, **kw)


def test_save_filter_grid_writes_the_same_pixels(tmp_path, rng: np.random.Generator) -> None:
    filters = rng.normal(size=(10, 6))
    path = save_filter_grid(tmp_path / "sub" / "filters.png", filters, (3, 2), scale=2)
    assert path.exists()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), filter_grid(filters, (3, 2), scale=2))


@pytest.mark.parametrize(
    "kw",
    [{}, {"cols": 4}, {"cols": 3, "border": 0}, {"scale": 3, "border": 2}, {"max_filters": 7}],
)
def test_filter_grid_is_the_layout_of_filter_tiles(rng: np.random.Generator, kw: dict) -> None:
    # A run keeps tiles for its animation and lays them out later: the same pixels.
    filters = rng.normal(size=(10, 6))
    layout = {k: v for k, v in kw.items() if k != "max_filters"}
    tiles = filter_tiles(filters, (3, 2), max_filters=kw.get("max_filters"))
    assert tiles.shape == (kw.get("max_filters", 10), 3, 2) and tiles.dtype == np.uint8
    np.testing.assert_array_equal(tile_grid(tiles, **layout), filter_grid(filters, (3, 2), **kw))
    with pytest.raises(ParameterError):
        tile_grid(tiles.astype(np.float32))


# --------------------------------------------------------------------------- progression


def test_frame_indices_keep_first_and_last() -> None:
    assert frame_indices(5, 60) == [0, 1, 2, 3, 4]
    assert frame_indices(0, 10) == []
    for n, m in [(100, 60), (61, 60), (1000, 7), (3, 2), (10, 2)]:
        idx = frame_indices(n, m)
        assert len(idx) == m
        assert idx[0] == 0 and idx[-1] == n - 1
        assert all(b > a for a, b in zip(idx, idx[1:], strict=False))
    assert frame_indices(9, 3) == [0, 4, 8]
    with pytest.raises(ParameterError):
        frame_indices(10, 1)


def _frames(n: int, shape: tuple[int, int] = (13, 13)) -> list[np.ndarray]:
    # Distinct frames (Pillow merges identical consecutive frames).
    return [np.full(shape, (17 * i) % 256, np.uint8) for i in range(n)]


@pytest.mark.parametrize("suffix", [".gif", ".png"])
def test_progression_frame_count_and_size(tmp_path, suffix: str) -> None:
    frames = [filter_grid(np.random.default_rng(i).normal(size=(10, 6)), (3, 2)) for i in range(5)]
    path = save_progression(tmp_path / f"prog{suffix}", frames, duration_ms=100)
    with Image.open(path) as im:
        assert im.format == ("GIF" if suffix == ".gif" else "PNG")
        assert im.n_frames == 5
        assert getattr(im, "is_animated", False)
        for i in range(im.n_frames):
            im.seek(i)
            assert im.size == (frames[0].shape[1], frames[0].shape[0])
            np.testing.assert_array_equal(np.asarray(im.convert("L")), frames[i])


@pytest.mark.parametrize("suffix", [".gif", ".png"])
def test_progression_subsamples_long_runs(tmp_path, suffix: str) -> None:
    frames = _frames(25)
    path = save_progression(tmp_path / f"long{suffix}", frames, max_frames=6)
    with Image.open(path) as im:
        assert im.n_frames == 6
        im.seek(0)
        np.testing.assert_array_equal(np.asarray(im.convert("L")), frames[0])
        im.seek(im.n_frames - 1)
        np.testing.assert_array_equal(np.asarray(im.convert("L")), frames[-1])


def test_progression_rejects_bad_frames(tmp_path) -> None:
    with pytest.raises(ParameterError):
        save_progression(tmp_path / "a.gif", [])
    with pytest.raises(ParameterError):
        save_progression(
            tmp_path / "a.gif", [np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8)]
        )
    with pytest.raises(ParameterError):
        save_progression(tmp_path / "a.gif", [np.zeros((4, 4), np.float64)])
    with pytest.raises(ParameterError):
        save_progression(tmp_path / "a.mp4", _frames(2))


def test_frame_recorder(tmp_path) -> None:
    rec = FrameRecorder()
    grid = np.zeros((5, 7), np.uint8)
    rec.add(grid)
    grid[:] = 9  # the recorder keeps its own copy
    assert np.all(rec.frames[0] == 0)
    for f in _frames(9, (5, 7))[1:]:
        rec.add(f)
    assert len(rec) == 9
    sel = rec.select(3)
    assert len(sel) == 3
    assert sel[0] is rec.frames[0] and sel[-1] is rec.frames[-1]
    assert np.all(sel[1] == rec.frames[4])
    assert len(rec.select(100)) == 9
    with pytest.raises(ParameterError):
        rec.add(np.zeros((5, 8), np.uint8))
    path = rec.save(tmp_path / "rec.gif", max_frames=4)
    with Image.open(path) as im:
        assert im.n_frames == 4
    rec.clear()
    assert len(rec) == 0


# --------------------------------------------------------------------------- reconstructions


def test_reconstruction_grid_layout() -> None:
    h, w, n, cols = 3, 2, 7, 4
    orig = np.linspace(0.1, 0.9, n)[:, None] * np.ones((n, h * w))
    recon = 1.0 - orig
    grid = reconstruction_grid(orig, recon, (h, w), cols=cols, border=1, scale=1)
    pairs = 2
    # Width: 4 tiles + 5 borders. Height: border + 2 pairs of (2 rows + 2 borders) + 1
    # separator line with its border.
    assert grid.shape == (1 + pairs * (2 * h + 2) + (1 + 1), cols * w + cols + 1)
    assert grid.shape == (19, 13)

    def cell(pair: int, which: int, c: int) -> np.ndarray:
        y = 1 + pair * (2 * h + 2 + 2) + which * (h + 1)
        x = 1 + c * (w + 1)
        return grid[y : y + h, x : x + w]

    for k in range(n):
        p, c = divmod(k, cols)
        assert np.all(cell(p, 0, c) == round(orig[k, 0] * 255))
        assert np.all(cell(p, 1, c) == round(recon[k, 0] * 255))
    # The separator between the two pairs is one full-width white line.
    sep_y = 1 + 2 * h + 2
    assert np.all(grid[sep_y] == RECON_SEPARATOR)
    assert np.all(grid[sep_y - 1] == RECON_BORDER) and np.all(grid[sep_y + 1] == RECON_BORDER)
    # The unused cell (k = 7) in the last pair is border-coloured.
    assert np.all(cell(1, 0, 3) == RECON_BORDER) and np.all(cell(1, 1, 3) == RECON_BORDER)
    # Outer frame is border-coloured, except where the separator line crosses it.
    for edge in (grid[0], grid[-1], np.delete(grid[:, 0], sep_y), np.delete(grid[:, -1], sep_y)):
        assert np.all(edge == RECON_BORDER)


def test_reconstruction_values_are_clipped_not_normalised() -> None:
    orig = np.array([[0.0, 0.25, 0.5, 1.0]])
    recon = np.array([[-3.0, 0.1, 0.2, 7.0]])
    grid = reconstruction_grid(orig, recon, (2, 2), border=0, scale=1)
    assert grid.shape == (4, 2)
    np.testing.assert_array_equal(grid[:2].ravel(), [0, 64, 128, 255])
    np.testing.assert_array_equal(grid[2:].ravel(), [0, 26, 51, 255])


def test_reconstruction_grid_scale_and_single_pair(rng: np.random.Generator) -> None:
    orig = rng.uniform(size=(10, 16))
    recon = rng.uniform(size=(10, 16))
    small = reconstruction_grid(orig, recon, (4, 4), scale=1)
    assert small.shape == (1 + 2 * (4 + 1), 10 * 4 + 11)  # one pair of rows, no separator
    big = reconstruction_grid(orig, recon, (4, 4))  # default scale 2
    np.testing.assert_array_equal(big, np.kron(small, np.ones((2, 2), np.uint8)))


def test_reconstruction_grid_rejects_mismatched_shapes() -> None:
    with pytest.raises(ParameterError):
        reconstruction_grid(np.zeros((3, 4)), np.zeros((2, 4)), (2, 2))
    with pytest.raises(ParameterError):
        reconstruction_grid(np.zeros((3, 4)), np.zeros((3, 4)), (3, 2))


def test_save_reconstructions(tmp_path, rng: np.random.Generator) -> None:
    orig = rng.uniform(size=(12, 9))
    recon = rng.uniform(size=(12, 9))
    path = save_reconstructions(tmp_path / "recon.png", orig, recon, (3, 3), cols=5)
    with Image.open(path) as im:
        assert im.format == "PNG"
        np.testing.assert_array_equal(
            np.asarray(im), reconstruction_grid(orig, recon, (3, 3), cols=5)
        )


# --------------------------------------------------------------------------- curves


def _metrics(n: int = 6) -> list[dict]:
    return [
        {"epoch": e, "loss": 1.0 / e, "mse": 0.5 / e, "mean_active": 40 - e, "seconds": 2.0 + e}
        for e in range(1, n + 1)
    ]


def test_plot_curves_writes_a_png(tmp_path) -> None:
    path = plot_curves(_metrics(), tmp_path / "plots" / "curves.png")
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert w > 300 and h > 200
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 1.0  # not a blank canvas


def test_plot_curves_one_subplot_per_present_key(tmp_path) -> None:
    one = plot_curves(_metrics(), tmp_path / "one.png", keys=("loss", "not_there"))
    three = plot_curves(_metrics(), tmp_path / "three.png", keys=("loss", "mse", "seconds"))
    with Image.open(one) as a, Image.open(three) as b:
        assert b.size[0] > 2 * a.size[0]  # subplots side by side
    four = plot_curves(
        _metrics(), tmp_path / "four.png", keys=("loss", "mse", "mean_active", "seconds")
    )
    with Image.open(three) as b, Image.open(four) as c:
        assert c.size[0] < b.size[0] and c.size[1] > b.size[1]  # 2x2, not 3+1


def test_plot_curves_tolerates_sparse_and_nonfinite_rows(tmp_path) -> None:
    rows = _metrics(4)
    rows[1] = {"epoch": 2, "loss": float("nan")}
    rows[2].pop("mean_active")
    rows.append({"loss": float("inf")})  # no epoch: counted by position
    path = plot_curves(rows, tmp_path / "c.png")
    with Image.open(path) as im:
        im.verify()


def test_plot_curves_errors(tmp_path) -> None:
    with pytest.raises(ParameterError):
        plot_curves([], tmp_path / "x.png")
    with pytest.raises(ParameterError):
        plot_curves(_metrics(), tmp_path / "x.png", keys=("nope",))


# --------------------------------------------------------------------------- import weight


def test_import_is_light() -> None:
    code = (
        "import sys, sparsekit.evaluation.figures\n"
        "heavy = [m for m in ('matplotlib', 'typer', 'rich') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_plot_fve_l0_draws_one_line_per_method(tmp_path) -> None:
    from sparsekit.evaluation.figures import plot_fve_l0
    from sparsekit.studies.sweep_report import SettingSummary
    from sparsekit.studies.sweep_report import plot_fve_l0 as sweep_plot

    path = plot_fve_l0({"topk": [(32.0, 0.9), (8.0, 0.7)], "l2": [(50.0, 0.8)]}, tmp_path / "a.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (700, 460)
    with pytest.raises(ParameterError):
        plot_fve_l0({"topk": []}, tmp_path / "b.png")
    summaries = [
        SettingSummary("topk", f"k={k}", 64, measures={"fve": f, "mean_active": float(k)})
        for k, f in ((8, 0.7), (32, 0.9))
    ]
    png = sweep_plot(summaries)
    assert png is not None and png.startswith(b"\x89PNG")
    assert sweep_plot([SettingSummary("topk", "k=8", 64)]) is None


# --------------------------------------------------------------------------- charts across methods

BUILT_IN = (
    "arora", "batchtopk", "gated", "jumprelu", "kl", "ksparse",
    "l2", "matryoshka", "plain", "relu-l1", "topk",
)  # fmt: skip


def test_every_method_has_its_own_colour_stable_per_name() -> None:
    from sparsekit.evaluation.figures import method_colours

    colours = method_colours(BUILT_IN)
    assert len(set(colours.values())) == len(BUILT_IN)  # plain and relu-l1 were both blue
    assert method_colours(["relu-l1", "plain"]) == {k: colours[k] for k in ("relu-l1", "plain")}
    many = method_colours([*BUILT_IN, *(f"plugin-{i}" for i in range(30))])
    assert len(set(many.values())) == len(many)


def _tick_labels(ax) -> list[str]:
    ax.figure.canvas.draw()
    ticks = [t for t in ax.get_xticklabels() if ax.get_xlim()[0] <= t.get_position()[0]]
    ticks = [t for t in ticks if t.get_position()[0] <= ax.get_xlim()[1]]
    return [t.get_text() for t in ticks if t.get_text()]


def test_few_epochs_on_a_log_axis_tick_as_plain_integers() -> None:
    from sparsekit.evaluation.figures import methods_figure

    histories = {m: _metrics(2) for m in ("plain", "relu-l1")}
    fig = methods_figure(histories)
    for ax in fig.axes:
        labels = _tick_labels(ax)
        assert labels == ["1", "2"], labels  # not 2×10⁰
    long = methods_figure({m: _metrics(500) for m in ("plain", "relu-l1")})
    assert _tick_labels(long.axes[0]) == ["1", "2", "5", "10", "20", "50", "100", "200", "500"]


def test_per_method_epoch_axes_tick_whole_epochs() -> None:
    """plot_curves' epoch axes (a run's own curves): two epochs tick 1 and 2, not 1.2, 1.4."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from sparsekit.evaluation.figures import _epoch_ticks

    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([1, 2], [0.5, 0.2])
    _epoch_ticks(ax, 2, log=False)
    assert all(float(v).is_integer() for v in ax.get_xticks())


def test_the_legend_stands_outside_the_axes_and_the_chart_is_large() -> None:
    from sparsekit.evaluation.figures import methods_figure

    fig = methods_figure({m: _metrics(50) for m in BUILT_IN})
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer))
    width, height = fig.get_size_inches() * fig.dpi
    assert width >= 1200 and height >= 400
    assert len({line.get_color() for line in fig.axes[0].get_lines()}) == len(BUILT_IN)


# --------------------------------------------------------------------------- stray pixels


def test_a_few_stray_pixels_do_not_blank_the_tile() -> None:
    """Issue 27: weights Adam grew on never-inked border pixels set the scale, and plain's
    final filters were mid grey; now the stray pixels are clipped and the stroke keeps
    its contrast."""
    rng = np.random.default_rng(0)
    stroke = rng.normal(size=(2, 28 * 28))
    stray = stroke.copy()
    border = np.r_[0:28, 28 * 27 : 28 * 28]  # top and bottom rows of the image
    stray[:, border[::2]] = 100.0 * rng.choice([-1.0, 1.0], size=(2, 28))
    clean, noisy = filter_tiles(stroke, (28, 28)), filter_tiles(stray, (28, 28))
    inside = np.s_[:, 2:26, 2:26]
    assert np.abs(noisy[inside].astype(float) - 128).mean() > 20  # not mid grey
    # the inside is drawn as without the stray pixels, up to the scale's change
    corr = np.corrcoef(clean[inside].ravel(), noisy[inside].ravel())[0, 1]
    assert corr > 0.95


def test_a_filter_without_outliers_is_drawn_as_display_network_does() -> None:
    rng = np.random.default_rng(1)
    weights = rng.uniform(-1, 1, size=(5, 64))  # max |w| ≈ 2 × median: no outlier
    centred = weights - weights.mean()
    expected = np.rint((centred / np.abs(centred).max(axis=1, keepdims=True) + 1) * 127.5)
    np.testing.assert_array_equal(filter_tiles(weights, (8, 8)).reshape(5, 64), expected)


def test_a_single_pixel_filter_is_not_blank() -> None:
    weights = np.zeros((1, 16))
    weights[0, 5] = 1.0
    tile = filter_tiles(weights, (4, 4)).ravel()
    assert tile.max() == 255 and len(set(tile.tolist())) == 2


def test_log_values_are_labelled_as_plain_numbers() -> None:
    from sparsekit.evaluation.figures import methods_figure

    # 0.05 to 0.5: a decade, where the minor ticks 0.2, 0.3 are labelled too (not 2×10⁻¹)
    histories = {m: [{"epoch": e, "mse": (0.1 + 0.04 * i) / e} for e in (1, 2)]
                 for i, m in enumerate(BUILT_IN)}  # fmt: skip
    fig = methods_figure(histories, keys=("mse",), log_values=True)
    fig.canvas.draw()
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    labels = [
        t.get_text()
        for t in [*ax.get_yticklabels(), *ax.get_yticklabels(minor=True)]
        if t.get_text() and low <= t.get_position()[1] <= high
    ]
    assert labels and all("10^" not in s and "times" not in s and "e-" not in s for s in labels)
    assert {"0.1", "0.2", "0.3"} <= set(labels), labels
