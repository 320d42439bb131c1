"""Every example workflow loads as the page saves it, converts to the API format and runs on the real server."""
import glob
import json
import os

import pytest
import requests

from tools.server import execution_error
from tools.workflows import ui_to_api

from tools.host import ROOT, TINY_CKPT_NAME as CKPT_NAME

EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "example_workflows", "*.json")))


def _shrink(api):
    """Run on the generated checkpoint at 128 px and 4 steps (the graph is otherwise unchanged)."""
    for node in api.values():
        inp = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            inp["ckpt_name"] = CKPT_NAME
        if node["class_type"] in ("EmptyLatentImage",):
            inp["width"] = inp["height"] = 128
        if "steps" in inp and not isinstance(inp["steps"], list):
            inp["steps"] = 4
    return api


def test_examples_exist_and_are_listed_as_templates(server):
    assert len(EXAMPLES) >= 2
    listed = requests.get(server.url + "/workflow_templates", timeout=30).json()
    names = {os.path.splitext(os.path.basename(p))[0] for p in EXAMPLES}
    assert names <= set(listed.get("faithful", [])), listed


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p) for p in EXAMPLES])
def test_example_runs_on_the_server(server, path):
    with open(path) as f:
        wf = json.load(f)
    api = _shrink(ui_to_api(wf, server.object_info()))
    assert any(n["class_type"].startswith("Faithful") for n in api.values())
    entry = server.run(api)
    err = execution_error(entry)
    assert err is None, err
    assert server.images(entry), "the example must write an image"
