"""--dataset patches: whitened natural-image patches, and the filter measures."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")

from sparsekit.data import load_dataset  # noqa: E402
from sparsekit.data.patches import (  # noqa: E402
    grey,
    localisation,
    make_patches,
    orientation_selectivity,
    whiten,
)
from sparsekit.errors import ParameterError  # noqa: E402


def test_patches_shape_normalisation_and_determinism():
    ds = load_dataset("patches:size=8,n=3000,seed=3")
    x = ds.to_array()
    assert x.shape == (3000, 64) and x.dtype == np.float32 and ds.image_shape == (8, 8)
    np.testing.assert_allclose(x.mean(axis=1), 0, atol=1e-5)  # DC removed, patch by patch
    var = x.var(axis=1)
    assert var.max() < 1.0 + 1e-5  # divided by sqrt(var + eps): never above 1
    assert np.median(var) > 0.5  # most patches carry contrast, not the floor
    np.testing.assert_array_equal(x, make_patches(size=8, n=3000, seed=3).to_array())
    other = load_dataset("patches:size=8,n=3000,seed=3", split="test").to_array()
    assert not np.allclose(other[:10], x[:10])
    assert len(load_dataset("patches:size=8,n=3000", subset=100)) == 100


def test_unit_range_for_sigmoid_outputs():
    x = make_patches(size=6, n=2000, range="unit").to_array()
    assert x.min() >= 0.1 - 1e-6 and x.max() <= 0.9 + 1e-6
    assert abs(float(x.mean()) - 0.5) < 0.01


def test_whitening_flattens_the_spectrum():
    import skimage.data

    img = grey(skimage.data.camera())

    def band_amplitude(image, lo, hi):
        amp = np.abs(np.fft.fft2(image - image.mean()))
        fy = np.fft.fftfreq(image.shape[0])[:, None]
        fx = np.fft.fftfreq(image.shape[1])[None, :]
        f = np.sqrt(fx**2 + fy**2)
        return amp[(f >= lo) & (f < hi)].mean()

    def slope(image):  # low-frequency over mid-frequency amplitude
        return band_amplitude(image, 0.01, 0.02) / band_amplitude(image, 0.1, 0.2)

    white = whiten(img)
    assert white.std() == pytest.approx(1.0)
    # Natural images: amplitude falls like 1/f (the bands are 10x apart); the filter's |f|
    # undoes that, and its cut-off (0.2 cycles/pixel) dampens the upper band a little.
    assert slope(img) > 10
    assert slope(white) < slope(img) / 5 and slope(white) < 3.5


@pytest.mark.parametrize(
    "spec, match",
    [
        ("patches:size=1", "size must be an integer >= 2"),
        ("patches:n=0", "n must be a positive integer"),
        ("patches:range=wide", "range must be one of"),
        ("patches:colour=red", "bad patches option"),
        ("patches:size=ten", "bad value"),
        ("patches:size=4000,n=5", "larger than a photograph"),
    ],
)
def test_bad_options_are_one_line_errors(spec, match):
    with pytest.raises(ParameterError, match=match):
        load_dataset(spec)


def test_orientation_selectivity_and_localisation():
    yy, xx = np.mgrid[0:12, 0:12].astype(float)
    grating = np.cos(2 * np.pi * (xx + yy) / 6)  # one orientation, whole patch
    blob = np.exp(-((yy - 5.5) ** 2 + (xx - 5.5) ** 2) / 4.0)  # isotropic, local
    gabor = blob * np.cos(2 * np.pi * xx / 4)
    point = np.zeros((12, 12))
    point[3, 7] = 1.0
    flat = np.ones((12, 12))
    noise = np.random.default_rng(0).standard_normal((200, 144))
    osi = orientation_selectivity(np.stack([grating, blob, gabor]), (12, 12))
    assert osi[0] > 0.95 and osi[1] < 0.05 and osi[2] > 0.7
    assert np.median(orientation_selectivity(noise, (12, 12))) < 0.2
    loc = localisation(np.stack([point, flat, blob, gabor]), (12, 12))
    assert loc[0] == pytest.approx(1.0) and loc[1] == pytest.approx(0.0, abs=1e-12)
    assert loc[2] > 0.5 and loc[3] > 0.4
    assert abs(np.median(localisation(noise, (12, 12)))) < 0.1
    assert localisation(np.zeros((1, 144)), (12, 12))[0] == 0.0  # no energy: no claim
