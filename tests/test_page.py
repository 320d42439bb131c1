"""The ComfyUI page in headless Chromium: example workflows load with every node known and no page error;
a screenshot of each is kept in tests/artifacts/."""
import glob
import json
import os

import pytest

from tools import page
from tools.host import ROOT

pytestmark = pytest.mark.skipif(not page.available(), reason="Debian's chromium is not installed (scripts/setup.sh installs it)")

EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "example_workflows", "*.json")))


def test_examples_load_in_the_page(server, artifacts_dir):
    with page.open_page(server.url, 1800, 900) as (p, errors):
        registered = p.evaluate("() => Object.keys(window.LiteGraph.registered_node_types)")
        for node in ("FaithfulExciteTokens", "FaithfulParsePromptBindings", "FaithfulBindAttributes",
                     "FaithfulSpatialAlignment"):
            assert node in registered
        for path in EXAMPLES:
            with open(path) as f:
                wf = json.load(f)
            page.load_workflow(p, wf)
            page.fit_view(p)
            loaded = p.evaluate("() => window.app.graph._nodes.map(n => [n.type, n.has_errors || false])")
            assert sorted(t for t, _ in loaded) == sorted(n["type"] for n in wf["nodes"])
            shot = os.path.join(artifacts_dir, "page_" + os.path.basename(path)[:-5] + ".png")
            p.screenshot(path=shot)
            assert os.path.getsize(shot) > 10_000
        assert errors == [], errors
