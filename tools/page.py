"""Drive the ComfyUI page in headless Chromium (Debian's /usr/bin/chromium through Python playwright; never a
browser download): open the server's page, load a workflow, take screenshots, read page errors."""
from __future__ import annotations

import contextlib
import json
import os

CHROMIUM = os.environ.get("FAITHFUL_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def available() -> bool:
    return os.path.exists(CHROMIUM)


@contextlib.contextmanager
def open_page(url: str, width: int = 1600, height: int = 900, timeout_ms: int = 60000):
    """Yields (page, errors): the ComfyUI page loaded and its app ready; errors collects page errors."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)  # playwright gives it a fresh profile
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url, timeout=timeout_ms)
            page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=timeout_ms)
            # Hide announcement banners and the minimap, which only cover the graph in screenshots.
            page.add_style_tag(content=".p-toast, [class*=banner], [class*=minimap] { display: none !important; }")
            yield page, errors
        finally:
            browser.close()


def load_workflow(page, workflow: dict, settle_ms: int = 1500) -> None:
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    page.wait_for_timeout(settle_ms)


def fit_view(page) -> None:
    page.evaluate("""() => {
        const c = window.app.canvas; const nodes = window.app.graph._nodes;
        if (!nodes.length) return;
        let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
        for (const n of nodes) { x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 30);
                                 x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]); }
        const w = c.canvas.width / (window.devicePixelRatio || 1), h = c.canvas.height / (window.devicePixelRatio || 1);
        // leave room for the side bar (left) and the menu and run bars (top)
        const L = 80, T = 140, R = 20, B = 20;
        const s = Math.min((w - L - R) / (x1 - x0), (h - T - B) / (y1 - y0), 1.2);
        c.ds.scale = s; c.ds.offset = [L / s - x0, T / s - y0]; c.setDirty(true, true);
    }""")
    page.wait_for_timeout(500)


def screenshot_workflow(url: str, workflow_path: str, out_png: str, width: int = 1800, height: int = 900) -> list[str]:
    """Load a workflow file into the page and save a screenshot; returns the page errors seen."""
    with open(workflow_path) as f:
        wf = json.load(f)
    with open_page(url, width, height) as (page, errors):
        load_workflow(page, wf)
        fit_view(page)
        os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
        page.screenshot(path=out_png)
        return errors


# -- waiting on the page's own state (no fixed sleeps) ------------------------------------------------------------
def wait_until(page, predicate_js: str, arg=None, timeout_ms: int = 20000):
    """Wait until the JS function `predicate_js` (called with `arg`) returns a truthy value; returns that value."""
    return page.wait_for_function(predicate_js, arg=arg, timeout=timeout_ms).json_value()


def set_nodes_2(page, enabled: bool, timeout_ms: int = 60000) -> None:
    """Put the frontend in the classic canvas or in Nodes 2.0 (its Vue node mode, setting
    "Comfy.VueNodes.Enabled", which the server keeps in the user's settings). When the mode changes, the page is
    reloaded so it starts in that mode, as after a restart: a switch inside a live page leaves node sizes of the
    other mode behind."""
    before = page.evaluate("() => !!window.LiteGraph.vueNodesMode")
    page.evaluate("async (v) => { await window.app.extensionManager.setting.set('Comfy.VueNodes.Enabled', v); }", enabled)
    if before != enabled:
        page.reload(timeout=timeout_ms)
        page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=timeout_ms)
        page.add_style_tag(content=".p-toast, [class*=banner], [class*=minimap] { display: none !important; }")
    wait_until(page, "(v) => !!window.LiteGraph.vueNodesMode === v", enabled, timeout_ms)
    wait_unblocked(page, timeout_ms)


def wait_unblocked(page, timeout_ms: int = 60000) -> None:
    """Wait until no document-wide blocking mask covers the page: frontend 1.49 shows a PrimeVue BlockUI mask
    while it starts (e.g. Nodes 2.0 after a reload), and a pointer press on it never reaches the graph."""
    wait_until(page, "() => !document.querySelector('.p-blockui-mask-document, .p-overlay-mask.p-component-overlay')",
               None, timeout_ms)


def load_workflow_and_wait(page, workflow: dict, timeout_ms: int = 20000) -> None:
    """Load a workflow and wait until the graph holds its nodes (instead of a fixed settle time)."""
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    wait_until(page, "(n) => window.app.graph._nodes.length === n", len(workflow.get("nodes", [])), timeout_ms)
    wait_unblocked(page, timeout_ms)
