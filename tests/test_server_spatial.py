"""Spatial Alignment Loss and chained guidance through the real server."""
from tools.graphs import chain, excite_graph, spatial_graph
from tools.server import execution_error

from tools.host import TINY_CKPT_NAME as CKPT_NAME


def test_spatial_writes_an_image(server):
    entry = server.run(spatial_graph(CKPT_NAME, seed=31, steps=4, prefix="spatial"))
    assert execution_error(entry) is None, execution_error(entry)
    assert server.images(entry)


def test_excite_and_spatial_chained_write_an_image(server):
    prompt = "a car to the left of a dog"
    g = spatial_graph(CKPT_NAME, prompt, seed=32, steps=4, prefix="chained")
    g = chain(g, "excite", "FaithfulExciteTokens", {"clip": ["ckpt", 1], "prompt": prompt, "subjects": "car, dog",
                                                      "iterative_refinement": False})
    entry = server.run(g)
    assert execution_error(entry) is None, execution_error(entry)
    assert server.images(entry)


def test_unknown_relation_is_a_node_error(server):
    entry = server.run(spatial_graph(CKPT_NAME, relations="car behind dog", seed=33, steps=2, prefix="badrel"))
    err = execution_error(entry)
    assert err is not None and err["node_type"] == "FaithfulSpatialAlignment"
    assert "no known relation" in err["exception_message"]


def test_attention_factor_without_maps_is_a_clear_error_and_the_server_recovers(server):
    """The tiny checkpoint at 128 px (16x16 latent) has cross-attention at factors 1, 2 and 4 only: factor 8 is
    found missing at run time, inside the sampler, and the message reaches the page; the next prompt on the same
    (cached) model runs."""
    entry = server.run(excite_graph(CKPT_NAME, seed=34, steps=2, prefix="badfactor", attention_factor=8,
                                    iterative_refinement=False))
    err = execution_error(entry)
    assert err is not None and err["node_type"] == "KSampler", err
    msg = err["exception_message"]
    assert "Excite Tokens: attention_factor 8 matches no cross-attention layer" in msg, msg
    assert "Set attention_factor on Excite Tokens to one of 1, 2, 4 " in msg, msg
    entry = server.run(excite_graph(CKPT_NAME, seed=34, steps=2, prefix="goodfactor", attention_factor=4,
                                    iterative_refinement=False))
    assert execution_error(entry) is None, execution_error(entry)
    assert server.images(entry)
