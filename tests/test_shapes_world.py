"""The shapes world and its exact evaluator (pure numpy: no model, no host)."""
import numpy as np
import pytest

from faithful_eval.shapes import evaluate as E
from faithful_eval.shapes import world

# Host-independent (or, for the fresh-clone example run, checked once): run on the first test host only.
pytestmark = pytest.mark.once



def test_world_is_seeded_and_reproducible():
    a = [world.sample_scene(np.random.default_rng([5, i])) for i in range(20)]
    b = [world.sample_scene(np.random.default_rng([5, i])) for i in range(20)]
    assert [s.caption for s in a] == [s.caption for s in b]
    assert all(np.array_equal(world.render(x.objects), world.render(y.objects)) for x, y in zip(a, b))
    imgs, caps, _ = world.batch(np.random.default_rng(1), 64)
    assert imgs.shape == (64, 4, world.SIZE, world.SIZE) and imgs.dtype == np.float32
    assert imgs.min() == -1.0 and imgs.max() == 1.0
    assert 0 < caps.count("") < 20  # ~10% empty captions (classifier-free guidance)


def test_caption_templates():
    rng = np.random.default_rng(0)
    caps = {k: [world.sample_scene(rng, kind=k).caption for _ in range(200)] for k in world.KIND_WEIGHTS}
    assert all(len(c.split()) in (3, 4) for c in caps["single"])
    assert all(" and " in c for c in caps["and"])
    for rel in ("to the left of", "to the right of", "above", "below"):
        assert any(rel in c for c in caps["relation"])
    assert any(c.count(",") == 1 and " and " in c for c in caps["three"])
    assert any(w in c for c in caps["relation"] for w in ("small", "big"))


def test_relation_scenes_put_object_a_on_the_named_side():
    rng = np.random.default_rng(3)
    for _ in range(300):
        s = world.sample_scene(rng, kind="relation")
        a, b = s.objects
        ok = {"left": a.cx < b.cx, "right": a.cx > b.cx, "above": a.cy < b.cy, "below": a.cy > b.cy}[s.relation]
        assert ok, s


def test_evaluator_exact_on_ground_truth():
    rng = np.random.default_rng(123)
    n = 1500
    bad = []
    for _ in range(n):
        s = world.sample_scene(rng)
        im = world.render(s.objects)
        sc = E.score_scene(im, s, use_regions=True)
        objs, _ = E.detect(im)
        got = sorted((o.colour, o.shape, o.size) for o in objs)
        want = sorted((o.colour, o.shape, o.size) for o in s.objects)
        if got != want or not (sc["presence"] and sc["binding"] and sc["size_ok"] and sc["layout_inside"]) \
                or sc["layout_iou"] < 0.999 or sc["guard_bad"] or (s.relation and not sc["relation"]):
            bad.append((s.caption, got, sc))
    assert not bad, bad[:3]
    # also from the RGB a viewer sees (H, W, 3 in [0, 1])
    s = world.sample_scene(np.random.default_rng(9), kind="three")
    assert E.score_scene(world.to_rgb(world.render(s.objects)), s)["binding"]


def _scene(kind="and", relation=None):
    return world.scene_from_caption_parts([("red", "circle", "big"), ("blue", "square", "big")], kind, relation)


def test_swapped_colours_fail_binding_but_keep_presence():
    s = _scene()
    swapped = [world.Obj("blue", "circle", "big", s.objects[0].cx, s.objects[0].cy),
               world.Obj("red", "square", "big", s.objects[1].cx, s.objects[1].cy)]
    sc = E.score_scene(world.render(swapped), s)
    assert sc["presence"] and not sc["binding"]
    assert sc["stray"] == 2 and sc["guard_bad"]


def test_missing_object_fails_presence():
    s = _scene()
    sc = E.score_scene(world.render(s.objects[:1]), s)
    assert not sc["presence"] and not sc["binding"] and not sc["guard_bad"]


@pytest.mark.parametrize("relation", ["left", "right", "above", "below"])
def test_mirrored_scene_fails_relation(relation):
    s = _scene("relation", relation)
    a, b = s.objects
    mirrored = [world.Obj(a.colour, a.shape, a.size, b.cx, b.cy), world.Obj(b.colour, b.shape, b.size, a.cx, a.cy)]
    assert E.score_scene(world.render(s.objects), s)["relation"]
    sc = E.score_scene(world.render(mirrored), s, use_regions=True)
    assert sc["relation_both"] and not sc["relation"]
    assert not sc["layout_inside"] and sc["layout_iou"] < 0.5


def test_noise_and_specks_are_flagged_by_the_guard():
    s = _scene()
    im = world.render(s.objects)
    im[:3, 0, 0] = np.array([1.0, -1.0, -1.0])  # one red pixel far from the red circle: a speck? (1 px: ignored)
    assert not E.score_scene(im, s)["guard_bad"]
    im[:3, 0:2, 0:2] = np.array([1.0, 1.0, -1.0])[:, None, None]  # a 2x2 yellow blob: a speck
    assert E.score_scene(im, s)["specks"] == 1 and E.score_scene(im, s)["guard_bad"]
    g = np.random.default_rng(0)
    noisy = g.uniform(-1, 1, im.shape).astype(np.float32)
    assert E.score_scene(noisy, s)["guard_bad"]
