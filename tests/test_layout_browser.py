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


def test_paint_save_reload(server, artifacts_dir):
    """Paint mode: brush a region free-hand (asked for its phrase once), add a second stroke to it, paint and
    delete another, draw a box after switching back; the strokes survive save and reload, and the backend
    rasterises them into a mask that is not their bounding box."""
    import torch

    from guidance_core.dense import masks_from_layout
    with page.open_page(server.url, 1400, 900) as (p, errors):
        asked = []
        answers = iter(["a cat", "a dog", "a bird"])

        def on_dialog(d):
            asked.append(d.message)
            d.accept(next(answers))
        p.on("dialog", on_dialog)
        p.evaluate("""() => {
            const app = window.app; app.graph.clear();
            const n = window.LiteGraph.createNode("FaithfulLayoutRegions");
            n.pos = [200, 60]; n.size = [420, 760]; app.graph.add(n);
            n.widgets.find(w => w.name === "layout").value = JSON.stringify({width: 512, height: 512, regions: []});
            app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; app.canvas.setDirty(true, true);
        }""")
        p.wait_for_timeout(800)
        canvas = p.locator("canvas.faithful-layout-canvas")
        canvas.wait_for(state="visible", timeout=20000)
        p.locator("button.faithful-layout-mode[data-mode=paint]").click()
        p.evaluate("""() => { const s = document.querySelector("input.faithful-layout-brush");
                              s.value = "8"; s.dispatchEvent(new Event("input", {bubbles: true})); }""")
        box = canvas.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100, box
        side = min(box["width"], box["height"]) - 8
        x0, y0 = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2
        at = lambda fx, fy: (x0 + fx * side, y0 + fy * side)

        def stroke(points):
            p.mouse.move(*at(*points[0]))
            p.mouse.down()
            for q in points[1:]:
                p.mouse.move(*at(*q), steps=6)
            p.mouse.up()
            p.wait_for_timeout(300)

        def layout():
            return p.evaluate("() => JSON.parse(window.app.graph._nodes[0].widgets.find(w => w.name === 'layout').value)")
        stroke([(0.2, 0.2), (0.2, 0.7), (0.45, 0.7)])  # a new painted region: asks for its phrase
        stroke([(0.35, 0.3), (0.4, 0.35)])             # the region is selected: the stroke adds to it
        regs = layout()["regions"]
        assert len(asked) == 1 and len(regs) == 1, (asked, regs)
        g = regs[0]
        assert g["phrase"] == "a cat" and not {"x", "y", "w", "h"} & set(g), g
        assert len(g["strokes"]) == 2 and all(s["r"] == pytest.approx(0.08) for s in g["strokes"]), g
        pts = g["strokes"][0]["points"]
        assert len(pts) >= 4 and all(0 <= v <= 1 for q in pts for v in q), pts
        assert pts[0] == pytest.approx([0.2, 0.2], abs=0.03) and pts[-1] == pytest.approx([0.45, 0.7], abs=0.03)
        assert any(q == pytest.approx([0.2, 0.7], abs=0.03) for q in pts), pts
        # "New" finishes the region: the next stroke starts another (asked again); Delete removes the selected one
        p.locator("button.faithful-layout-new").click()
        stroke([(0.7, 0.7), (0.85, 0.85)])
        assert [r["phrase"] for r in layout()["regions"]] == ["a cat", "a dog"]
        canvas.press("Delete")
        p.wait_for_timeout(200)
        assert [r["phrase"] for r in layout()["regions"]] == ["a cat"]
        # back to Box: a drag draws a box again
        p.locator("button.faithful-layout-mode[data-mode=box]").click()
        p.mouse.move(*at(0.6, 0.1))
        p.mouse.down()
        p.mouse.move(*at(0.9, 0.4), steps=6)
        p.mouse.up()
        p.wait_for_timeout(300)
        saved_layout = layout()
        regs = saved_layout["regions"]
        assert [r["phrase"] for r in regs] == ["a cat", "a bird"] and regs[1]["w"] == pytest.approx(0.3, abs=0.03), regs
        p.screenshot(path=os.path.join(artifacts_dir, "layout_widget_painted.png"))

        saved = p.evaluate("() => window.app.graph.serialize()")
        p.evaluate("() => window.app.graph.clear()")
        page.load_workflow(p, saved)
        again = p.evaluate("""() => { const n = window.app.graph._nodes.find(n => n.type === 'FaithfulLayoutRegions');
                                       return JSON.parse(n.widgets.find(w => w.name === 'layout').value); }""")
        assert again == saved_layout
        drawn = p.evaluate("""() => window.app.graph._nodes.find(n => n.type === 'FaithfulLayoutRegions').faithfulLayout()""")
        assert drawn["regions"] == saved_layout["regions"]  # the widget redrew from the loaded value
        p.wait_for_timeout(300)
        p.screenshot(path=os.path.join(artifacts_dir, "layout_widget_painted_reloaded.png"))
        assert errors == [], errors

    masks, phrases = masks_from_layout(again)
    assert phrases == ["a cat", "a bird"] and masks.shape == (2, 64, 64)
    cat = masks[0]
    ys, xs = cat.nonzero(as_tuple=True)
    assert cat[int(0.45 * 64), int(0.2 * 64)] == 1 and cat[int(0.55 * 64), int(0.35 * 64)] == 0  # on the L; off it, inside its extent
    assert cat.sum() < 0.75 * float((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)), "mask is its bounding box"
    assert torch.equal(masks[1][8:24, 40:56], torch.ones(16, 16))
