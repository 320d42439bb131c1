"""Record Attention and Attention Map Preview: reading attention never changes the image; maps; grids; errors;
and the whole chain through a real server."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from tools import tiny


def _sample(model, pos, neg, seed=0, steps=6, batch=2):
    import comfy.sample
    lat = torch.zeros(batch, 4, 32, 32)
    return comfy.sample.sample(model, comfy.sample.prepare_noise(lat, seed), steps, 5.0, "euler", "normal", pos, neg,
                               lat, seed=seed, disable_pbar=True)


@pytest.fixture(scope="module")
def setup(pack):
    return tiny.build_model("sd1", seed=8), tiny.TokenizerClip(), tiny.random_cond(seed=1), tiny.random_cond(seed=2)


def _record(model, clip, words="cat, frog", prompt="a cat and a frog", **kw):
    from faithful.nodes.preview import RecordAttention
    kw.setdefault("attention_factor", 2)
    return RecordAttention.execute(model, clip, prompt, words, **kw).args[0]


# -- the recorder itself, on synthetic attention ----------------------------------------------------------------

def test_core_module_imports_no_comfy():
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = "import sys, guidance_core.preview; bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'comfy_api', 'nodes')]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


class _FakeRun:
    def __init__(self, steps=4, latent_shape=(2, 4, 8, 8)):
        self.sample_sigmas = torch.linspace(4.0, 0.0, steps + 1)
        self.n_steps = steps
        self.latent_shape = latent_shape

    def step_index(self, sigma):
        d = (self.sample_sigmas[:-1] - float(sigma.flatten()[0])).abs()
        i = int(d.argmin())
        return i if float(d[i]) < 1e-6 else None


def test_recorder_keeps_the_cond_rows_mean_over_heads_and_layers():
    from guidance_core.attention import attention_probs
    from guidance_core.preview import AttentionRecorder
    T, heads = 6, 2
    rec = AttentionRecorder([f"t{j}" for j in range(T)], [[j] for j in range(T)], factor=2, start=0.0, end=0.5)
    run = _FakeRun()
    ob = rec.bind(run)
    g = torch.Generator().manual_seed(0)
    expected = []
    for step in range(run.n_steps):
        for n in (64, 16, 16):  # one factor-1 layer (ignored) and two factor-2 layers per forward
            q = torch.randn(4, n, 8, generator=g, requires_grad=True)
            k = torch.randn(4, T, 8, generator=g)
            eo = {"cond_or_uncond": [1, 0], "sigmas": run.sample_sigmas[step:step + 1], "n_heads": heads,
                  "original_shape": [4, 4, 8, 8]}
            ob(q, k, eo)
            if n == 16 and step < 2:  # steps 0 and 1 of 4 are in [0, 0.5)
                expected.append(attention_probs(q[2:].detach(), k[2:], heads).reshape(2, 4, 4, T).permute(0, 3, 1, 2))
        ob(torch.randn(4, 16, 8), torch.randn(4, T, 8), dict(eo, original_shape=[4, 4, 4, 16]))  # a crop: ignored
    assert rec.result is None  # nothing is filed before the run ends
    ob.finish("run-1")
    res = rec.result
    assert res is rec.result_for("run-1") and res["steps"] == 2 and res["layers"] == 4
    assert torch.allclose(res["maps"], torch.stack(expected).mean(0), atol=1e-6)
    # every token its own word: the words' maps sum to 1 at every pixel (rows of a softmax)
    assert torch.allclose(res["maps"].sum(1), torch.ones(2, 4, 4), atol=1e-5)
    assert not res["maps"].requires_grad
    # a new run starts a fresh recording and files it apart; the first run's stays readable by its key
    ob2 = rec.bind(run)
    assert ob2.result is None
    ob2(torch.randn(4, 16, 8, generator=g), torch.randn(4, T, 8, generator=g),
        dict(eo, sigmas=run.sample_sigmas[:1]))
    ob2.finish("run-2")
    assert rec.result_for("run-2")["layers"] == 1 and rec.result_for("run-1")["layers"] == 4


def test_recorder_all_layers_resizes_to_the_latent():
    from guidance_core.preview import AttentionRecorder
    rec = AttentionRecorder(["a"], [[1]], factor="all")
    run = _FakeRun(latent_shape=(1, 4, 8, 8))
    ob = rec.bind(run)
    for n in (64, 16, 4):
        ob(torch.randn(2, n, 8), torch.randn(2, 5, 8), {"cond_or_uncond": [0, 1], "sigmas": run.sample_sigmas[:1],
                                                        "n_heads": 2, "original_shape": [2, 4, 8, 8]})
    assert ob.result["maps"].shape == (1, 1, 8, 8) and ob.result["layers"] == 3


# -- in-process on the tiny model ---------------------------------------------------------------------------------

def test_recording_changes_nothing_and_maps_are_probabilities(setup):
    from faithful.nodes.preview import _recorder
    model, clip, pos, neg = setup
    plain = _sample(model, pos, neg, seed=4)
    rec_model = _record(model, clip)
    recorded = _sample(rec_model, pos, neg, seed=4)
    assert torch.equal(plain, recorded)
    res = _recorder(rec_model).result
    assert res["words"] == ["cat", "frog"] and res["steps"] == 6
    maps = res["maps"]
    assert maps.shape == (2, 2, 16, 16) and maps.dtype == torch.float32  # batch 2, two words, 16x16 = factor 2 of 32
    assert (maps >= 0).all() and (maps <= 1).all() and maps.sum() > 0
    # recording every layer, or only a step range, changes nothing either
    all_model = _record(model, clip, all_layers=True, start=0.5, end=1.0)
    assert torch.equal(plain, _sample(all_model, pos, neg, seed=4))
    res = _recorder(all_model).result
    assert res["maps"].shape == (2, 2, 32, 32) and res["steps"] == 3  # latent size; steps 3, 4, 5 of 6
    assert res["factor"] == "all" and (res["maps"] >= 0).all() and (res["maps"] <= 1).all()


def test_recording_a_guided_run_changes_nothing(setup):
    from faithful.nodes.excite import ExciteTokens
    model, clip, pos, neg = setup
    guided = ExciteTokens.execute(model, clip, "a cat and a frog", "cat, frog", attention_factor=2,
                                  iterative_refinement=False).args[0]
    a = _sample(guided, pos, neg, seed=7, steps=4, batch=1)
    b = _sample(_record(guided, clip), pos, neg, seed=7, steps=4, batch=1)
    assert torch.equal(a, b)


def test_grid_sizes_single_and_guided_vs_unguided(setup):
    from faithful.nodes.excite import ExciteTokens
    from faithful.nodes.preview import AttentionMapPreview
    model, clip, pos, neg = setup
    prompt = "a cat and a frog"
    guided = ExciteTokens.execute(model, clip, prompt, "cat, frog", attention_factor=2, iterative_refinement=False).args[0]
    g = _record(guided, clip, end=0.5)
    u = _record(model, clip, words="cat, and, frog", end=0.5)
    _sample(g, pos, neg, seed=5)
    _sample(u, pos, neg, seed=5)
    images = torch.rand(2, 64, 48, 3)
    single = AttentionMapPreview.execute(g, images)
    grid = single.args[0]
    # one row per image (64 + 18 caption px), one column per word after the plain image (48 px each)
    assert grid.shape == (1, 2 * (64 + 18), 3 * 48, 3)
    assert grid.min() >= 0 and grid.max() <= 1 and single.ui is not None
    both = AttentionMapPreview.execute(g, images, u, images).args[0]
    # guided rows above unguided rows, a 6 px separator; the unguided run has 3 words, so 4 columns
    assert both.shape == (1, 2 * 2 * 82 + 6, 4 * 48, 3)
    # the same heat maps as alone; only the first column's caption changed ('image' -> 'guided')
    assert torch.equal(both[0, :2 * 82, 48:3 * 48], grid[0, :, 48:])
    assert not torch.equal(both[0, :18, :48], grid[0, :18, :48])


def test_clear_errors(setup):
    from faithful.nodes.preview import AttentionMapPreview
    model, clip, pos, neg = setup
    with pytest.raises(ValueError, match="'giraffe' is not in the prompt"):
        _record(model, clip, words="cat, giraffe")
    with pytest.raises(ValueError, match="no words given"):
        _record(model, clip, words=" , ")
    with pytest.raises(ValueError, match="must be after start"):
        _record(model, clip, start=0.6, end=0.4)
    with pytest.raises(ValueError, match="carries no attention recorder; connect Record Attention before the sampler"):
        AttentionMapPreview.execute(model, torch.rand(1, 8, 8, 3))
    never_sampled = _record(model, clip)
    with pytest.raises(ValueError, match="has no maps"):
        AttentionMapPreview.execute(never_sampled, torch.rand(2, 8, 8, 3))
    r = _record(model, clip, words="cat", attention_factor=32)  # no layer is 32x smaller than a 32x32 latent
    _sample(r, pos, neg, seed=6)
    with pytest.raises(ValueError, match="no attention layer matched attention_factor 32"):
        AttentionMapPreview.execute(r, torch.rand(2, 8, 8, 3))
    ok = _record(model, clip)
    _sample(ok, pos, neg, seed=6)
    with pytest.raises(ValueError, match="3 images but the recorded run had a batch of 2"):
        AttentionMapPreview.execute(ok, torch.rand(3, 8, 8, 3))
    with pytest.raises(ValueError, match="both compare_model and compare_images"):
        AttentionMapPreview.execute(ok, torch.rand(2, 8, 8, 3), compare_model=ok)


# -- through the server --------------------------------------------------------------------------------------------

def test_server_record_and_preview(server):
    from tools.graphs import base_graph, preview_graph
    from tools.host import TINY_CKPT_NAME as CKPT_NAME
    from tools.server import execution_error

    def pixels(data):
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    kw = dict(seed=71, steps=4, batch=2)
    entry = server.run(preview_graph(CKPT_NAME, factor=2, prefix="recorded", **kw))  # 16x16 latent: 8x8 maps
    assert execution_error(entry) is None, execution_error(entry)
    outs = entry["outputs"]
    assert [im["type"] for im in outs["preview"]["images"]] == ["temp"]
    grid = pixels(server.images({"outputs": {"preview": outs["preview"]}})[0])
    assert grid.shape == (2 * (128 + 18), 3 * 128, 3)  # two images; the image, cat, frog
    # the recorded run saved the same pixels as the same graph without Record Attention
    plain = server.run(base_graph(CKPT_NAME, "a cat and a frog", prefix="unrecorded", **kw))
    assert execution_error(plain) is None, execution_error(plain)
    recorded = [pixels(d) for d in server.images({"outputs": {"save": outs["save"]}})]
    assert len(recorded) == 2
    assert all(np.array_equal(a, b) for a, b in zip(recorded, map(pixels, server.images(plain))))
    # the preview fed the checkpoint's model instead of the recorded one: a clear node error
    bad = preview_graph(CKPT_NAME, factor=2, prefix="bad", **kw)
    bad["preview"]["inputs"]["model"] = ["ckpt", 0]
    err = execution_error(server.run(bad))
    assert err is not None and "connect Record Attention before the sampler" in err["exception_message"], err
