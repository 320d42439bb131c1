"""The region-drawing widget of Layout Regions in the real page (headless Chromium), on the classic canvas and
in Nodes 2.0 (the frontend's Vue node mode): draw boxes and paint with the mouse, type phrases in the widget
(flagged while they are not in the prompt), resize the node, open the JSON panel, save and reload the workflow
and get the same regions back with no page error. Every wait is on a condition of the page, never a sleep."""
import os

import pytest

from tools import page

pytestmark = pytest.mark.skipif(not page.available(), reason="Debian's chromium is not installed (scripts/setup.sh installs it)")

MODES = ["classic", "nodes2"]


@pytest.fixture
def page_url(request):
    """The page to test: FAITHFUL_PAGE_URL when set (e.g. a server started with another frontend through
    --front-end-root), else the session's headless server."""
    return os.environ.get("FAITHFUL_PAGE_URL") or request.getfixturevalue("server").url
NODE_JS = "window.app.graph._nodes.find(n => n.type === 'FaithfulLayoutRegions')"


def layout(p):
    return p.evaluate(f"() => JSON.parse({NODE_JS}.widgets.find(w => w.name === 'layout').value)")


def new_node(p, mode, prompt="a cat and a dog in a garden", size=(440, 640)):
    """A fresh Layout Regions node with an empty layout, at zoom 1, in `mode`; returns the image rect."""
    page.set_nodes_2(p, mode == "nodes2")
    p.evaluate("""([prompt, size]) => {
        const app = window.app; app.graph.clear();
        const n = window.LiteGraph.createNode("FaithfulLayoutRegions");
        n.pos = [220, 100]; app.graph.add(n); n.setSize(size);
        n.widgets.find(w => w.name === "layout").value = JSON.stringify({width: 512, height: 512, regions: []});
        const pw = n.widgets.find(w => w.name === "prompt"); pw.value = prompt; pw.callback?.(prompt);
        app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; app.canvas.setDirty(true, true);
    }""", [prompt, list(size)])
    p.locator("canvas.faithful-layout-canvas").wait_for(state="visible", timeout=20000)
    return image_rect(p)


def image_rect(p, min_side=100):
    """The drawn image in client pixels, once the canvas has laid out to at least min_side."""
    return page.wait_until(p, f"""(m) => {{ const n = {NODE_JS}; const r = n && n.faithfulLayoutImageRect();
                                          return r && r.w > m && r.h > m ? r : null; }}""", min_side)


class Mouse:
    def __init__(self, p, rect):
        self.p, self.r = p, rect

    def at(self, fx, fy):
        return self.r["x"] + fx * self.r["w"], self.r["y"] + fy * self.r["h"]

    def drag(self, points, steps=5):
        self.p.mouse.move(*self.at(*points[0]))
        self.p.mouse.down()
        for q in points[1:]:
            self.p.mouse.move(*self.at(*q), steps=steps)
        self.p.mouse.up()


def resize_node(p, dy):
    """Drag the node's bottom-right corner down by dy px, as an artist resizes it (classic canvas or Nodes 2.0)."""
    x, y = p.evaluate(f"""() => {{ const n = {NODE_JS};
        if (window.LiteGraph.vueNodesMode) {{
            const b = document.querySelector(`[data-node-id="${{n.id}}"]`).getBoundingClientRect(); return [b.right, b.bottom]; }}
        const c = window.app.canvas, r = c.canvas.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
        const q = c.ds.convertOffsetToCanvas([n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
        return [r.left + q[0] / dpr, r.top + q[1] / dpr]; }}""")
    p.mouse.move(x - 3, y - 3)
    p.mouse.down()
    p.mouse.move(x - 3, y - 3 + dy, steps=8)
    p.mouse.up()


def wait_regions(p, n):
    page.wait_until(p, f"(n) => JSON.parse({NODE_JS}.widgets.find(w => w.name === 'layout').value).regions.length === n", n)


def type_phrase(p, text):
    """The phrase editor is focused after a region is drawn: type into it as an artist would."""
    box = p.locator("input.faithful-layout-phrase")
    page.wait_until(p, "() => document.activeElement && document.activeElement.classList.contains('faithful-layout-phrase')")
    box.fill(text)
    box.press("Enter")


def warnings(p):
    return p.evaluate("() => { const w = document.querySelector('.faithful-layout-warning');"
                      " return [Number(w.dataset.count || 0), w.textContent]; }")


def reload(p):
    saved = p.evaluate("() => window.app.graph.serialize()")
    p.evaluate("() => window.app.graph.clear()")
    page.load_workflow_and_wait(p, saved)
    return p.evaluate(f"() => JSON.parse({NODE_JS}.widgets.find(w => w.name === 'layout').value)")


@pytest.mark.parametrize("mode", MODES)
def test_draw_type_resize_save_reload(page_url, artifacts_dir, mode):
    shot = lambda name: p.screenshot(path=os.path.join(artifacts_dir, f"layout_{mode}_{name}.png"))
    with page.open_page(page_url, 1400, 1150) as (p, errors):
        p.on("dialog", lambda d: (d.dismiss(), errors.append("window dialog: " + d.message)))
        rect = new_node(p, mode)
        # the raw JSON is hidden by default (still the saved value), the drawing area is a real size
        assert p.evaluate(f"() => {NODE_JS}.widgets.find(w => w.name === 'layout').hidden") is True
        assert not p.locator("textarea.faithful-layout-json-text").is_visible()
        assert rect["w"] > 200 and rect["h"] > 200, rect
        m = Mouse(p, rect)
        m.drag([(0.05, 0.1), (0.25, 0.5), (0.45, 0.9)])
        wait_regions(p, 1)
        type_phrase(p, "a cat")
        m.drag([(0.55, 0.2), (0.75, 0.5), (0.95, 0.8)])
        wait_regions(p, 2)
        # a phrase not in the prompt is flagged in the widget while it is typed, and cleared once it is
        p.locator("input.faithful-layout-phrase").fill("a bird")
        count, text = page.wait_until(p, """() => { const w = document.querySelector('.faithful-layout-warning');
                                                   return w.dataset.count === '1' ? [1, w.textContent] : null; }""")
        assert "a bird" in text and "not in the prompt" in text, text
        shot("phrase_flagged")
        p.locator("input.faithful-layout-phrase").fill("a dog")
        page.wait_until(p, "() => document.querySelector('.faithful-layout-warning').dataset.count === '0'")
        regs = layout(p)["regions"]
        assert [r["phrase"] for r in regs] == ["a cat", "a dog"], regs
        assert regs[0]["x"] == pytest.approx(0.05, abs=0.03) and regs[0]["w"] == pytest.approx(0.4, abs=0.03)
        assert regs[1]["y"] == pytest.approx(0.2, abs=0.03) and regs[1]["h"] == pytest.approx(0.6, abs=0.03)
        # the corner handle is grabbed from 8 px away and resizes the (selected) dog box
        hx, hy = m.at(0.95, 0.8)
        p.mouse.move(hx - 8, hy - 8)
        p.mouse.down()
        p.mouse.move(*m.at(0.9, 0.95), steps=5)
        p.mouse.up()
        page.wait_until(p, f"() => {{ const r = JSON.parse({NODE_JS}.widgets.find(w => w.name === 'layout').value).regions[1];"
                           " return Math.abs(r.y + r.h - 0.95) < 0.03; }")
        regs = layout(p)["regions"]
        assert regs[1]["x"] == pytest.approx(0.55, abs=0.03) and regs[1]["w"] == pytest.approx(0.35, abs=0.03), regs
        shot("drawn")

        # the drawing grows with the node. Classic canvas: the text boxes stop at 120 / 60 px and the canvas takes
        # the rest (+300 of 300 px on frontend 1.32, +290 on 1.49); Nodes 2.0 on 1.32: its row grows 4x the text boxes.
        # (+200); on 1.49 the Vue grid shares the height equally among the three growing rows (+100).
        before = rect["canvasHeight"]
        resize_node(p, 300)
        need = 180 if mode == "classic" else 90
        grown = page.wait_until(p, f"""([b, need]) => {{ const r = {NODE_JS}.faithfulLayoutImageRect();
                                              return r.canvasHeight >= b + need ? r : null; }}""", [before, need])
        assert grown["h"] >= rect["h"] + 60, (rect, grown)
        shot("resized")

        # the JSON panel opens on demand and shows the saved value
        p.locator("details.faithful-layout-json > summary").click()
        p.locator("textarea.faithful-layout-json-text").wait_for(state="visible")
        assert p.evaluate("() => JSON.parse(document.querySelector('textarea.faithful-layout-json-text').value)") == layout(p)

        saved_layout = layout(p)
        again = reload(p)
        assert again == saved_layout
        drawn = page.wait_until(p, f"() => {NODE_JS}.faithfulLayout()")
        assert drawn["regions"] == saved_layout["regions"]  # the widget redrew from the loaded value
        image_rect(p)
        shot("reloaded")
        assert errors == [], errors


@pytest.mark.parametrize("mode", MODES)
def test_paint_save_reload(page_url, artifacts_dir, mode):
    """Paint mode: brush a region free-hand (its phrase typed in the widget), add a second stroke to it, paint
    and delete another, draw a box after switching back; the strokes survive save and reload, and the backend
    rasterises them into a mask that is not their bounding box."""
    import torch

    from guidance_core.dense import masks_from_layout
    with page.open_page(page_url, 1400, 1150) as (p, errors):
        p.on("dialog", lambda d: (d.dismiss(), errors.append("window dialog: " + d.message)))
        m = Mouse(p, new_node(p, mode, prompt="a cat, a dog and a bird"))
        p.locator("button.faithful-layout-mode[data-mode=paint]").click()
        p.evaluate("""() => { const s = document.querySelector("input.faithful-layout-brush");
                              s.value = "8"; s.dispatchEvent(new Event("input", {bubbles: true})); }""")
        m.drag([(0.2, 0.2), (0.2, 0.7), (0.45, 0.7)], steps=6)  # a new painted region: its phrase is asked for
        wait_regions(p, 1)
        type_phrase(p, "a cat")
        m.drag([(0.35, 0.3), (0.4, 0.35)], steps=6)             # the region is selected: the stroke adds to it
        page.wait_until(p, f"() => JSON.parse({NODE_JS}.widgets.find(w => w.name === 'layout').value).regions[0].strokes.length === 2")
        regs = layout(p)["regions"]
        assert len(regs) == 1, regs
        g = regs[0]
        assert g["phrase"] == "a cat" and not {"x", "y", "w", "h"} & set(g), g
        assert all(s["r"] == pytest.approx(0.08) for s in g["strokes"]), g
        pts = g["strokes"][0]["points"]
        assert len(pts) >= 4 and all(0 <= v <= 1 for q in pts for v in q), pts
        assert pts[0] == pytest.approx([0.2, 0.2], abs=0.03) and pts[-1] == pytest.approx([0.45, 0.7], abs=0.03)
        assert any(q == pytest.approx([0.2, 0.7], abs=0.03) for q in pts), pts
        # "New" finishes the region: the next stroke starts another; Delete removes the selected one
        p.locator("button.faithful-layout-new").click()
        m.drag([(0.7, 0.7), (0.85, 0.85)], steps=6)
        wait_regions(p, 2)
        type_phrase(p, "a dog")
        assert [r["phrase"] for r in layout(p)["regions"]] == ["a cat", "a dog"]
        p.locator("canvas.faithful-layout-canvas").press("Delete")
        wait_regions(p, 1)
        assert [r["phrase"] for r in layout(p)["regions"]] == ["a cat"]
        # back to Box: a drag draws a box again
        p.locator("button.faithful-layout-mode[data-mode=box]").click()
        m.drag([(0.6, 0.1), (0.9, 0.4)], steps=6)
        wait_regions(p, 2)
        type_phrase(p, "a bird")
        saved_layout = layout(p)
        regs = saved_layout["regions"]
        assert [r["phrase"] for r in regs] == ["a cat", "a bird"] and regs[1]["w"] == pytest.approx(0.3, abs=0.03), regs
        p.locator("canvas.faithful-layout-canvas").click(position={"x": 3, "y": 3})  # deselect: the painted view
        p.screenshot(path=os.path.join(artifacts_dir, f"layout_{mode}_painted.png"))

        again = reload(p)
        assert again == saved_layout
        drawn = page.wait_until(p, f"() => {NODE_JS}.faithfulLayout()")
        assert drawn["regions"] == saved_layout["regions"]
        image_rect(p)
        p.screenshot(path=os.path.join(artifacts_dir, f"layout_{mode}_painted_reloaded.png"))
        assert errors == [], errors

    masks, phrases = masks_from_layout(again)
    assert phrases == ["a cat", "a bird"] and masks.shape == (2, 64, 64)
    cat = masks[0]
    ys, xs = cat.nonzero(as_tuple=True)
    assert cat[int(0.45 * 64), int(0.2 * 64)] == 1 and cat[int(0.55 * 64), int(0.35 * 64)] == 0  # on the L; off it, inside its extent
    assert cat.sum() < 0.75 * float((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)), "mask is its bounding box"
    assert torch.equal(masks[1][8:24, 40:56], torch.ones(16, 16))
