"""The sprites dataset: deterministic, the full factor grid exactly once, and labels that match
the images (the centre of mass sits at the x and y factors, the area grows with the scale,
turning a sprite turns its picture)."""

import math

import pytest
import torch

from dgmkit.data import load_dataset
from dgmkit.data.dataset import Dataset, Split
from dgmkit.data.sprites import FACTOR_NAMES, SpritesGrid, sprites
from dgmkit.errors import DataError


@pytest.fixture(scope="module")
def data():
    return sprites(32, seed=0)


def test_same_images_and_labels_every_time_and_the_seed_only_splits(data):
    again = sprites(32, seed=0)
    for s in ("train", "valid", "test"):
        assert torch.equal(again.split(s).x, data.split(s).x)
        assert torch.equal(again.split(s).factors, data.split(s).factors)
    other = sprites(32, seed=1)
    assert not torch.equal(other.train.factors, data.train.factors)
    key = lambda d: sorted(map(tuple, torch.cat([d.train.factors, d.valid.factors, d.test.factors]).tolist()))  # noqa: E731
    assert key(other) == key(data)


def test_every_factor_combination_appears_exactly_once(data):
    grid = SpritesGrid(32)
    f = torch.cat([data.train.factors, data.valid.factors, data.test.factors])
    assert len(f) == len(grid) == 3 * 6 * 10 * 16 * 16
    assert len({tuple(r) for r in f.tolist()}) == len(grid)
    assert data.factor_names == FACTOR_NAMES and data.factor_sizes == grid.factor_sizes
    assert (len(data.valid), len(data.test)) == (4608, 4608)
    assert torch.equal(data.train.y, data.train.factors[:, 0])
    assert data.num_levels == 2 and data.train.x.dtype == torch.uint8 and set(data.train.x.unique().tolist()) <= {0, 1}


def test_images_are_the_rendering_of_their_factors(data):
    grid = SpritesGrid(32)
    idx = torch.randperm(len(data.test), generator=torch.Generator().manual_seed(0))[:300]
    assert torch.equal(grid.render(data.test.factors[idx]), data.test.x[idx])


def test_centre_of_mass_is_at_the_position_factors():
    grid = SpritesGrid(32)
    f = grid.all_factors()
    f = f[(f[:, 0] < 2)]  # squares and ellipses are symmetric about their centre
    f = f[torch.randperm(len(f), generator=torch.Generator().manual_seed(1))[:500]]
    x = grid.render(f)[:, 0].double()
    centre = (torch.arange(32, dtype=torch.float64) + 0.5) / 32
    mass = x.sum((1, 2))
    cx = (x.sum(1) * centre).sum(1) / mass
    cy = (x.sum(2) * centre).sum(1) / mass
    v = grid.values()
    assert (cx - v["x"][f[:, 3]]).abs().max() < 1.0 / 32
    assert (cy - v["y"][f[:, 4]]).abs().max() < 1.0 / 32


def test_area_grows_with_scale_and_shapes_differ():
    grid = SpritesGrid(32)
    tpl = grid._templates().double().sum((-1, -2))  # (shape, scale, orientation) areas in pixels
    assert (tpl[:, 1:] > tpl[:, :-1]).all()
    for i in range(3):
        # the area scales as scale^2 (to the pixel rounding)
        ratio = tpl[i, -1].mean() / tpl[i, 0].mean()
        assert ratio == pytest.approx(4.0, rel=0.25)
    full = grid._templates()[:, -1, 0]
    assert not torch.equal(full[0], full[1]) and not torch.equal(full[1], full[2]) and not torch.equal(full[0], full[2])


def test_a_quarter_turn_turns_the_picture():
    grid = SpritesGrid(32, orientations=4)
    tpl = grid._templates()
    for shape in range(3):
        turned = torch.rot90(tpl[shape, -1, 0], k=-1, dims=(0, 1))  # 90 degrees, the image's y axis pointing down
        # the image centre is a pixel corner, so a quarter turn maps the pixel grid onto itself
        assert (turned.int() - tpl[shape, -1, 1].int()).abs().sum() <= 2
    # the heart is not symmetric under a half turn; the ellipse is
    assert not torch.equal(torch.rot90(tpl[2, -1, 0], 2), tpl[2, -1, 0])
    assert (torch.rot90(tpl[1, -1, 0], 2).int() - tpl[1, -1, 2].int()).abs().sum() <= 2


@pytest.mark.parametrize("size, distinct", [(32, 119), (64, 120)])
def test_the_distinct_sprites_are_as_many_as_the_module_says(size, distinct):
    """Of the 180 drawn (shape, scale, orientation) sprites, the half turns of squares and
    ellipses repeat: 120 differ, 119 at 32x32, where one more pair of small squares rounds alike."""
    tpl = SpritesGrid(size)._templates().flatten(0, 2)
    assert len({bytes(t.flatten().tolist()) for t in tpl}) == distinct


def test_64_pixel_sprites_and_the_registry():
    grid = SpritesGrid(64)
    f = torch.tensor([[0, 5, 0, 0, 0], [2, 0, 3, 15, 15]])
    x = grid.render(f)
    assert x.shape == (2, 1, 64, 64)
    assert x[:, :, 0].sum() == 0 and x[:, :, -1].sum() == 0 and x[..., 0].sum() == 0 and x[..., -1].sum() == 0
    ds = load_dataset("sprites", "/nonexistent", download=False)
    assert ds.name == "sprites" and ds.event_shape == (1, 32, 32)
    assert float(grid.values()["orientation"][1]) == pytest.approx(2 * math.pi / 10, abs=1e-12)


def test_bad_factors_and_sizes_are_refused():
    grid = SpritesGrid(32)
    with pytest.raises(ValueError, match="0..size-1"):
        grid.render(torch.tensor([[3, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="shape"):
        grid.render(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="32x32 or 64x64"):
        SpritesGrid(48)
    # split fractions: a negative one was read as an empty test split, NaN failed inside round()
    for kw in ({"valid_fraction": -0.1}, {"test_fraction": float("nan")}, {"valid_fraction": 0.0}, {"test_fraction": 1.0}):
        with pytest.raises(ValueError, match=f"^{next(iter(kw))} must lie strictly between 0 and 1"):
            sprites(**kw)
    with pytest.raises(ValueError, match="must leave a training split"):
        sprites(valid_fraction=0.5, test_fraction=0.5)


def test_a_dataset_checks_its_factors():
    x = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    ok = Split(x, None, torch.zeros(4, 2, dtype=torch.long))
    Dataset("d", ok, ok, ok, 2, ("a", "b"), (1, 1))
    with pytest.raises(DataError, match="factor indices outside"):
        Dataset("d", ok, ok, ok, 2, ("a", "b"), (1, 0))
    with pytest.raises(DataError, match="names none"):
        Dataset("d", ok, ok, ok, 2)
    with pytest.raises(DataError, match="one row of integer factor indices"):
        Split(x, None, torch.zeros(4, 2))
    assert torch.equal(ok.subset(torch.tensor([1, 2])).factors, torch.zeros(2, 2, dtype=torch.long))
