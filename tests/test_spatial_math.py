"""InfSplign math on synthetic maps with known answers."""
import math

import pytest
import torch
import torch.nn.functional as F

from guidance_core.spatial import (canonical_relation, centroid, infsplign_layer_loss, infsplign_loss,
                                   relation_delta, resize_maps, spatial_variance)
from guidance_core.spatial_term import parse_relation_line

# Host-independent (or, for the fresh-clone example run, checked once): run on the first test host only.
pytestmark = pytest.mark.once



def _onehot(h, w, i, j):
    m = torch.zeros(1, h, w)
    m[0, i, j] = 1.0
    return m


def test_centroid_of_a_point_and_of_a_uniform_map():
    c = centroid(_onehot(5, 5, 1, 3))
    assert c[0].tolist() == pytest.approx([0.75, 0.25])  # x = 3/4, y = 1/4
    assert centroid(torch.ones(1, 4, 4))[0].tolist() == pytest.approx([0.5, 0.5])


def test_variance_of_a_point_is_zero_and_of_two_points_is_known():
    assert spatial_variance(_onehot(5, 5, 2, 2)).item() == pytest.approx(0.0, abs=1e-7)
    m = torch.zeros(1, 5, 5)
    m[0, 2, 0] = m[0, 2, 4] = 1.0  # x = 0 and 1 on the same row: centroid x 0.5, variance 0.25
    assert spatial_variance(m).item() == pytest.approx(0.25)


def test_placement_term_by_hand():
    a, b = _onehot(5, 5, 2, 0), _onehot(5, 5, 2, 4)  # A at x=0, B at x=1: A is left of B, delta = 1
    l, t = infsplign_layer_loss(a, b, "left of", alpha=1.5, margin=0.25, w_spatial=1.0, w_presence=0.0)
    assert t["delta"].item() == pytest.approx(1.0)
    assert l.item() == pytest.approx(F.gelu(torch.tensor(1.5 * (0.25 - 1.0))).item(), abs=1e-6)
    l2, t2 = infsplign_layer_loss(b, a, "left of", alpha=1.5, margin=0.25, w_spatial=1.0, w_presence=0.0)
    assert t2["delta"].item() == pytest.approx(-1.0)
    assert l2.item() == pytest.approx(F.gelu(torch.tensor(1.5 * 1.25)).item(), abs=1e-6)
    assert l2 > l


@pytest.mark.parametrize("rel,expected", [("right of", -1.0), ("above", 0.0), ("below", 0.0), ("next to", 1.0)])
def test_relation_deltas(rel, expected):
    ca, cb = torch.tensor([[0.0, 0.5]]), torch.tensor([[1.0, 0.5]])
    assert relation_delta(ca, cb, rel).item() == pytest.approx(expected)


def test_presence_and_balance_terms():
    a = torch.zeros(1, 5, 5)
    a[0, 2, 0] = a[0, 2, 4] = 1.0  # v = 0.25
    b = _onehot(5, 5, 0, 0)  # v = 0
    _, top = infsplign_layer_loss(a, b, "left of", group="top")
    _, mid = infsplign_layer_loss(a, b, "left of", group="mid")
    assert top["energy"].item() == pytest.approx(0.25)
    assert mid["energy"].item() == pytest.approx(0.25)
    with pytest.raises(ValueError):
        infsplign_layer_loss(a, b, "left of", group="bottom")


def test_gradient_moves_a_left_when_violated():
    """A Gaussian blob for A right of B; descending the left-of loss moves A's centroid left."""
    xs = torch.linspace(0, 1, 16)
    pos = torch.tensor(0.7, requires_grad=True)
    blob = lambda cx: torch.exp(-((xs[None, :] - cx) ** 2 + (xs[:, None] - 0.5) ** 2) / 0.01)[None]
    loss, _ = infsplign_layer_loss(blob(pos), blob(torch.tensor(0.3)), "left_of", w_presence=0.0)
    loss.backward()
    assert pos.grad.item() > 0  # gradient descent decreases pos: A moves left


def test_loss_over_layers_and_resize():
    attn = torch.rand(2, 8, 8, 6)
    layers = [(attn, "top"), (resize_maps(attn.permute(0, 3, 1, 2).flatten(0, 1), 16)
                              .reshape(2, 6, 16, 16).permute(0, 2, 3, 1), "mid")]
    loss, _ = infsplign_loss(layers, [([1], "left of", [2, 3])])
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    assert infsplign_loss([(attn.half(), "top")], [([1], "above", [2])])[0].dtype == torch.float32


def test_relation_names_and_lines():
    assert canonical_relation("To the left of") == "left_of"
    assert canonical_relation("on top of") == "above"
    with pytest.raises(ValueError, match="unknown relation"):
        canonical_relation("behind")
    assert parse_relation_line("red car to the left of blue dog") == ("red car", "to the left of", "blue dog")
    assert parse_relation_line("lamp | above | table") == ("lamp", "above", "table")
    with pytest.raises(ValueError, match="no known relation"):
        parse_relation_line("car behind dog")


@pytest.mark.parametrize("line,which", [("left of", "both objects are missing"),
                                        ("| left of |", "both objects are missing"),
                                        ("car left of", "the second object (after 'left of') is missing"),
                                        ("to the left of dog", "the first object (before 'to the left of') is missing"),
                                        ("car | above |", "the second object (after 'above') is missing")])
def test_a_relation_without_objects_says_they_are_missing(line, which):
    with pytest.raises(ValueError) as err:
        parse_relation_line(line)
    assert which in str(err.value) and "e.g. 'car " in str(err.value), str(err.value)
