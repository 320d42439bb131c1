"""What a run did, read from the nodes in the real page (headless Chromium, classic canvas and Nodes 2.0): Parse
Prompt Bindings shows its parse and the guidance node its summary after the page's own Run."""
import os

import pytest

from tools import page
from tools.graphs import bind_graph, chain
from tools.host import TINY_CKPT_NAME as CKPT_NAME

pytestmark = pytest.mark.skipif(not page.available(), reason="Debian's chromium is not installed (scripts/setup.sh installs it)")

PROMPT = "a pink sunflower and a yellow flamingo"


@pytest.mark.parametrize("mode", ["classic", "nodes2"])
def test_run_in_the_page_shows_the_parse_and_the_summary(server, artifacts_dir, mode):
    g = bind_graph(CKPT_NAME, prompt=PROMPT, seed=71 + (mode == "nodes2"), steps=2, prefix=f"page-{mode}")
    g = chain(g, "excite", "FaithfulExciteTokens", {"clip": ["ckpt", 1], "prompt": PROMPT,
                                                    "subjects": "sunflower, flamingo", "attention_factor": 4,
                                                    "iterative_refinement": False})
    with page.open_page(server.url, 1600, 1000) as (p, errors):
        page.set_nodes_2(p, mode == "nodes2")
        p.evaluate("(g) => window.app.loadApiJson(g, 'faithful-test.json')", g)
        page.wait_until(p, "() => window.app.graph._nodes.length >= 9")
        p.evaluate("() => window.app.queuePrompt(0, 1)")
        js = """(kind) => { const n = window.app.graph._nodes.find(n => n.type === kind);
                            const w = n && n.widgets && n.widgets.find(w => w.name === (kind.includes('Parse') ? 'parse' : 'summary'));
                            return w && w.value ? w.value : null; }"""
        parse = page.wait_until(p, js, "FaithfulParsePromptBindings", timeout_ms=300000)
        summary = page.wait_until(p, js, "FaithfulExciteTokens", timeout_ms=300000)
        page.fit_view(p)
        p.screenshot(path=os.path.join(artifacts_dir, f"node_text_{mode}.png"))
        assert "sunflower <- pink" in parse and "flamingo <- yellow" in parse and "parser:" in parse
        assert "of attention" in summary
        assert errors == [], errors
