"""Guided vs unguided attention maps through the real server, in one prompt."""
import io

from PIL import Image

from tools.graphs import comparison_graph
from tools.host import TINY_CKPT_NAME as CKPT_NAME
from tools.server import execution_error


def test_comparison_graph_writes_images_and_the_attention_grid(server):
    entry = server.run(comparison_graph(CKPT_NAME, seed=61, steps=4, factor=2))
    assert execution_error(entry) is None, execution_error(entry)
    outs = entry["outputs"]
    assert {"save", "save_plain", "preview"} <= set(outs)
    grid = Image.open(io.BytesIO(server.images({"outputs": {"preview": outs["preview"]}})[0]))
    assert grid.width == 3 * 128 and grid.height == 2 * (128 + 18) + 6  # image + 2 words; two runs
