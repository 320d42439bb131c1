"""The region-drawing widget in the real page (headless Chromium): draw two boxes with the mouse, type their
phrases, save and reload the workflow, and get the same regions back with no page error."""
import os

import pytest

from tools import page

pytestmark = pytest.mark.skipif(not page.available(), reason="Debian's chromium is not installed (scripts/setup.sh installs it)")


def test_draw_save_reload(server, artifacts_dir):
    with page.open_page(server.url, 1400, 900) as (p, errors):
        phrases = iter(["a cat", "a dog"])
        p.on("dialog", lambda d: d.accept(next(phrases)))
        p.evaluate("""() => {
            const app = window.app; app.graph.clear();
            const n = window.LiteGraph.createNode("FaithfulLayoutRegions");
            n.pos = [200, 60]; n.size = [420, 760]; app.graph.add(n);
            const w = n.widgets.find(w => w.name === "layout");
            w.value = JSON.stringify({width: 512, height: 512, regions: []});
            app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; app.canvas.setDirty(true, true);
        }""")
        p.wait_for_timeout(800)
        canvas = p.locator("canvas.faithful-layout-canvas")
        canvas.wait_for(state="visible", timeout=20000)
        box = canvas.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100, box
        side = min(box["width"], box["height"]) - 8
        x0, y0 = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2

        def drag(fx0, fy0, fx1, fy1):
            p.mouse.move(x0 + fx0 * side, y0 + fy0 * side)
            p.mouse.down()
            p.mouse.move(x0 + (fx0 + fx1) / 2 * side, y0 + (fy0 + fy1) / 2 * side, steps=4)
            p.mouse.move(x0 + fx1 * side, y0 + fy1 * side, steps=4)
            p.mouse.up()
            p.wait_for_timeout(300)
        drag(0.05, 0.1, 0.45, 0.9)
        drag(0.55, 0.2, 0.95, 0.8)
        layout = p.evaluate("() => JSON.parse(window.app.graph._nodes[0].widgets.find(w => w.name === 'layout').value)")
        regs = layout["regions"]
        assert [r["phrase"] for r in regs] == ["a cat", "a dog"], layout
        assert regs[0]["x"] == pytest.approx(0.05, abs=0.03) and regs[0]["w"] == pytest.approx(0.4, abs=0.03)
        assert regs[1]["y"] == pytest.approx(0.2, abs=0.03) and regs[1]["h"] == pytest.approx(0.6, abs=0.03)
        p.screenshot(path=os.path.join(artifacts_dir, "layout_widget_drawn.png"))
        saved = p.evaluate("() => window.app.graph.serialize()")
        p.evaluate("() => window.app.graph.clear()")
        page.load_workflow(p, saved)
        again = p.evaluate("""() => { const n = window.app.graph._nodes.find(n => n.type === 'FaithfulLayoutRegions');
                                       return JSON.parse(n.widgets.find(w => w.name === 'layout').value); }""")
        assert again == layout
        drawn = p.evaluate("""() => window.app.graph._nodes.find(n => n.type === 'FaithfulLayoutRegions').faithfulLayout()""")
        assert drawn["regions"] == layout["regions"]  # the widget redrew from the loaded value
        p.wait_for_timeout(300)
        p.screenshot(path=os.path.join(artifacts_dir, "layout_widget_reloaded.png"))
        assert errors == [], errors
