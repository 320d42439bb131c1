"""Excite Tokens through a real ComfyUI server (POST /prompt) on the generated checkpoint."""
import io

import numpy as np
from PIL import Image

from tools.graphs import base_graph, excite_graph
from tools.server import cached_nodes, execution_error

from tools.host import TINY_CKPT_NAME as CKPT_NAME


def _pixels(server, entry):
    imgs = server.images(entry)
    assert imgs, f"no image written: {entry.get('status')}"
    return np.asarray(Image.open(io.BytesIO(imgs[0])).convert("RGB"), dtype=np.int16)


ALL_NODES = {"FaithfulExciteTokens", "FaithfulParsePromptBindings", "FaithfulBindAttributes",
             "FaithfulSpatialAlignment", "FaithfulLayoutRegions", "FaithfulRecordAttention",
             "FaithfulAttentionMapPreview", "FaithfulPromptFromSet"}


def test_nodes_registered_without_import_failure(server):
    import os
    import requests
    from tools.host import ROOT
    info = server.object_info()
    assert ALL_NODES <= set(info), sorted(ALL_NODES - set(info))
    for node_id in ALL_NODES:
        node = info[node_id]
        assert len(node["description"]) > 40, node_id
        for name, spec in {**node["input"]["required"], **node["input"].get("optional", {})}.items():
            assert spec[1].get("tooltip"), f"{node_id} input {name} has no tooltip"
        assert all(node.get("output_tooltips") or [None]), f"{node_id} has an output without a tooltip"
        assert os.path.exists(os.path.join(ROOT, "web", "docs", node_id + ".md")), f"{node_id} has no docs page"
        doc = requests.get(f"{server.url}/extensions/faithful/docs/{node_id}.md", timeout=30)
        assert doc.ok and doc.text.startswith("# "), node_id
    bad = [ln for ln in server.log().splitlines()
           if ("IMPORT FAILED" in ln or "Cannot import" in ln) and "faithful" in ln.lower()]
    assert not bad, bad


def test_excite_writes_image_and_leaves_cached_model_plain(server):
    plain_before = server.run(base_graph(CKPT_NAME, "a cat and a frog", seed=123, steps=6, prefix="plain"))
    assert execution_error(plain_before) is None, execution_error(plain_before)
    guided = server.run(excite_graph(CKPT_NAME, seed=123, steps=6, prefix="guided", attention_factor=4))
    assert execution_error(guided) is None, execution_error(guided)
    # The same plain graph again, made uncacheable by an equivalent denoise (int(6 / 0.9999999) = 6 steps, the
    # same sigmas), so the KSampler really runs on the cached model the guided prompt used.
    plain_after = server.run(base_graph(CKPT_NAME, "a cat and a frog", seed=123, steps=6, prefix="plain2",
                                        denoise=0.9999999))
    assert execution_error(plain_after) is None, execution_error(plain_after)
    assert "sampler" not in cached_nodes(plain_after)
    a, g, b = _pixels(server, plain_before), _pixels(server, guided), _pixels(server, plain_after)
    assert np.array_equal(a, b), "a plain prompt after a guided one must give the same image"
    assert np.abs(a - g).max() > 0, "guidance must change the image"


def test_bad_subject_is_a_clear_node_error(server):
    entry = server.run(excite_graph(CKPT_NAME, subjects="cat, giraffe", seed=5, steps=2, prefix="bad"))
    err = execution_error(entry)
    assert err is not None
    assert err["node_type"] == "FaithfulExciteTokens"
    assert "giraffe" in err["exception_message"] and "not in the prompt" in err["exception_message"]
    # The server survives and still runs prompts.
    ok = server.run(base_graph(CKPT_NAME, "a cat", seed=6, steps=2, prefix="after-bad"))
    assert execution_error(ok) is None


def test_empty_subjects_is_a_clear_node_error(server):
    entry = server.run(excite_graph(CKPT_NAME, subjects=" , ", seed=8, steps=2, prefix="empty"))
    err = execution_error(entry)
    assert err is not None and "no subjects" in err["exception_message"]
