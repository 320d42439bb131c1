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


def test_boxes_drawn_on_a_square_canvas_fit_a_non_square_latent(server):
    """The widget's default 512x512 canvas, a 192x128 Empty Latent Image: the boxes are fractions laid onto
    the sampler's latent (this used to fail with "the masks are 64x64 but the image is 192x128")."""
    square = {"width": 512, "height": 512, "regions": [
        {"x": 0.0, "y": 0.25, "w": 0.5, "h": 0.6, "phrase": "a cat"},
        {"x": 0.5, "y": 0.25, "w": 0.5, "h": 0.6, "phrase": "a dog"}]}
    entry = server.run(layout_graph(CKPT_NAME, layout=square, width=192, height=128, seed=54, steps=2,
                                    prefix="layout-wide"))
    assert execution_error(entry) is None, execution_error(entry)
    import io
    from PIL import Image
    images = server.images(entry)
    assert images and Image.open(io.BytesIO(images[0])).size == (192, 128)
