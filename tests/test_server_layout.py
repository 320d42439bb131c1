"""Layout Regions through the real server: drawn regions write an image; a bad phrase is the node's error."""
from tools.graphs import chain, layout_graph
from tools.host import TINY_CKPT_NAME as CKPT_NAME
from tools.server import execution_error


def test_layout_writes_an_image(server):
    entry = server.run(layout_graph(CKPT_NAME, seed=51, steps=4, prefix="layout"))
    assert execution_error(entry) is None, execution_error(entry)
    assert server.images(entry)


def test_layout_composes_with_excite_tokens(server):
    prompt = "a cat and a dog in a garden"
    g = layout_graph(CKPT_NAME, prompt, seed=52, steps=4, prefix="layout-excite")
    g = chain(g, "excite", "FaithfulExciteTokens", {"clip": ["ckpt", 1], "prompt": prompt, "subjects": "cat, dog",
                                                      "iterative_refinement": False})
    entry = server.run(g)
    assert execution_error(entry) is None, execution_error(entry)


def test_phrase_not_in_prompt_is_a_node_error(server):
    bad = {"width": 128, "height": 128, "regions": [{"x": 0, "y": 0, "w": 0.5, "h": 1, "phrase": "a horse"}]}
    entry = server.run(layout_graph(CKPT_NAME, layout=bad, seed=53, steps=2, prefix="layout-bad"))
    err = execution_error(entry)
    assert err is not None and err["node_type"] == "FaithfulLayoutRegions"
    assert "is not in the prompt" in err["exception_message"]
