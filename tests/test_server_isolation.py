"""Through the real server: a changed downstream widget on a cached upstream guided model gives the image a fresh
server gives (nothing leaks between clones or prompts), and a node prompt that is not the sampler's positive
prompt is a clear error."""
import io

import numpy as np
from PIL import Image

from tools.graphs import base_graph, chain, excite_graph, layout_graph
from tools.host import TINY_CKPT_NAME as CKPT_NAME
from tools.server import Server, cached_nodes, execution_error, make_base_dir


def _pixels(server, entry):
    err = execution_error(entry)
    assert err is None, err
    imgs = server.images(entry)
    assert imgs, entry.get("status")
    return np.asarray(Image.open(io.BytesIO(imgs[0])).convert("RGB"), dtype=np.int16)


def _excite_then_spatial(scale, prefix):
    g = excite_graph(CKPT_NAME, prompt="a cat to the left of a frog", subjects="cat, frog", seed=41, steps=4,
                     prefix=prefix, attention_factor=4, iterative_refinement=False)
    return chain(g, "spatial", "FaithfulSpatialAlignment", {"clip": ["ckpt", 1], "prompt": "a cat to the left of a frog",
                                                            "relations": "cat left of frog", "guidance_scale": scale})


def test_changed_downstream_widget_on_a_cached_upstream_matches_a_fresh_server(server, tiny_checkpoint,
                                                                                 tmp_path_factory):
    first = server.run(_excite_then_spatial(1000.0, "iso-a"))
    assert execution_error(first) is None, execution_error(first)
    second = server.run(_excite_then_spatial(2000.0, "iso-b"))
    assert "excite" in cached_nodes(second), "the upstream Excite Tokens output must come from the cache"
    reused = _pixels(server, second)
    base = make_base_dir(str(tmp_path_factory.mktemp("comfy-fresh")), {CKPT_NAME: tiny_checkpoint})
    with Server(base) as fresh:
        clean = _pixels(fresh, fresh.run(_excite_then_spatial(2000.0, "iso-fresh")))
    assert np.array_equal(reused, clean), "stale guidance terms leaked into the second prompt"


def test_node_prompt_other_than_the_samplers_is_a_clear_error(server):
    g = excite_graph(CKPT_NAME, prompt="a cat and a frog", subjects="frog", seed=43, steps=2, prefix="mismatch")
    g["pos"]["inputs"]["text"] = "a dog and a frog"  # same token count, other words
    err = execution_error(server.run(g))
    assert err is not None, "a prompt that is not the sampler's must not run silently"
    assert "Excite Tokens" in err["exception_message"] and "same prompt" in err["exception_message"]
    ok = server.run(base_graph(CKPT_NAME, "a cat", seed=44, steps=2, prefix="after-mismatch"))
    assert execution_error(ok) is None


def test_spliced_layout_conditioning_still_matches_its_prompt(server):
    """Layout Regions' CONDITIONING (phrase embeddings pasted over their words) feeds the sampler; Excite Tokens on
    the same prompt must accept it."""
    prompt = "a cat and a dog in a garden"
    g = layout_graph(CKPT_NAME, prompt=prompt, seed=45, steps=2, prefix="layout-excite")
    g = chain(g, "excite", "FaithfulExciteTokens", {"clip": ["ckpt", 1], "prompt": prompt, "subjects": "cat, dog",
                                                    "attention_factor": 4, "iterative_refinement": False})
    assert execution_error(server.run(g)) is None
