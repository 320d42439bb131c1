"""Record Attention and Attention Map Preview: reading attention never changes the image; grids; errors."""
import pytest
import torch

from tools import tiny


def _sample(model, pos, neg, seed=0):
    import comfy.sample
    lat = torch.zeros(2, 4, 32, 32)
    return comfy.sample.sample(model, comfy.sample.prepare_noise(lat, seed), 6, 5.0, "euler", "normal", pos, neg, lat,
                               seed=seed, disable_pbar=True)


@pytest.fixture(scope="module")
def setup(pack):
    return tiny.build_model("sd1", seed=8), tiny.TokenizerClip(), tiny.random_cond(seed=1), tiny.random_cond(seed=2)


def test_recording_changes_nothing_and_maps_are_probabilities(setup):
    from faithful.nodes.preview import RecordAttention, _recorder
    model, clip, pos, neg = setup
    plain = _sample(model, pos, neg, seed=4)
    rec_model = RecordAttention.execute(model, clip, "a cat and a frog", "cat, frog", attention_factor=2).args[0]
    recorded = _sample(rec_model, pos, neg, seed=4)
    assert torch.equal(plain, recorded)
    res = _recorder(rec_model).result
    assert res["words"] == ["cat", "frog"] and res["steps"] == 6
    maps = res["maps"]
    assert maps.shape == (2, 2, 16, 16)  # batch 2, two words, 16x16 at factor 2 of a 32x32 latent
    assert (maps >= 0).all() and (maps <= 1).all() and maps.sum() > 0


def test_guided_and_unguided_side_by_side(setup):
    from faithful.nodes.excite import ExciteTokens
    from faithful.nodes.preview import AttentionMapPreview, RecordAttention
    model, clip, pos, neg = setup
    prompt = "a cat and a frog"
    guided = ExciteTokens.execute(model, clip, prompt, "cat, frog", attention_factor=2, iterative_refinement=False).args[0]
    g = RecordAttention.execute(guided, clip, prompt, "cat, frog", attention_factor=2, start=0.0, end=0.5).args[0]
    u = RecordAttention.execute(model, clip, prompt, "cat, frog", attention_factor=2, start=0.0, end=0.5).args[0]
    _sample(g, pos, neg, seed=5)
    _sample(u, pos, neg, seed=5)
    images = torch.rand(2, 64, 64, 3)
    out = AttentionMapPreview.execute(g, images, u, images)
    grid = out.args[0]
    # two runs x two images, each row (64 + 18 caption) high; image + 2 words = 3 tiles of 64 wide; 6 px separator
    assert grid.shape == (1, 2 * 2 * 82 + 6, 3 * 64, 3)
    assert out.ui is not None


def test_clear_errors(setup):
    from faithful.nodes.preview import AttentionMapPreview, RecordAttention
    model, clip, pos, neg = setup
    with pytest.raises(ValueError, match="'giraffe' is not in the prompt"):
        RecordAttention.execute(model, clip, "a cat and a frog", "giraffe")
    with pytest.raises(ValueError, match="carries no recording"):
        AttentionMapPreview.execute(model, torch.rand(1, 8, 8, 3))
    r = RecordAttention.execute(model, clip, "a cat and a frog", "cat", attention_factor=32).args[0]
    _sample(r, pos, neg, seed=6)
    with pytest.raises(ValueError, match="saw no attention"):
        AttentionMapPreview.execute(r, torch.rand(2, 8, 8, 3))
