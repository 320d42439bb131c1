"""After a run, one line per guidance node saying what guidance did, shown on the node in the page.

The lines are built from the run's report (guidance_core's per-step losses, refinement updates, skipped steps)
and sent to the page as a ``faithful.summary`` websocket event ``{"node": <node id>, "text": ...}``, which
web/js/node_text.js writes under the node. In-process (no server) nothing is sent.
"""
from __future__ import annotations

import logging

log = logging.getLogger("faithful")

EVENT = "faithful.summary"


def _mean(v) -> float:
    return sum(v) / max(1, len(v))


def summarize(label: str, report: list) -> str:
    """One line for the term reported as ``label`` (e.g. "attend_and_excite#2") over a run's ``report``."""
    guided = [r for r in report if label in r.get("losses", {})]
    if not guided:
        return ("warning: guidance changed nothing: no sampler step was guided (raise guided_fraction, widen "
                "start/end, or use more steps)")
    skipped = sum(1 for r in guided if r.get("skipped"))
    if skipped == len(guided):
        return f"warning: guidance changed nothing: all {skipped} guided steps had a non-finite loss and were skipped"
    first, last = _mean(guided[0]["losses"][label]), _mean(guided[-1]["losses"][label])
    steps = f"{len(guided)} guided step{'s' if len(guided) != 1 else ''}"
    if label.split("#")[0] == "attend_and_excite":
        refine = sum(int(r.get("refinement_iterations", 0)) for r in guided)
        text = (f"weakest subject reached {1 - last:.2f} of attention at step {guided[-1]['step'] + 1} "
                f"(from {1 - first:.2f}); {steps}; {refine} refinement updates")
    else:
        text = f"loss {first:.3g} at step {guided[0]['step'] + 1} -> {last:.3g} at step {guided[-1]['step'] + 1}; {steps}"
    if skipped:
        text += f"; {skipped} skipped (non-finite)"
    return text


def send(node_id: str | None, text: str) -> None:
    """Show ``text`` on node ``node_id`` in the page of the client that queued the prompt (no-op without a server)."""
    if not node_id:
        return
    try:
        from server import PromptServer
        srv = getattr(PromptServer, "instance", None)
        if srv is None:
            return
        srv.send_sync(EVENT, {"node": str(node_id), "text": text}, getattr(srv, "client_id", None))
    except Exception as e:  # the picture matters more than the caption
        log.debug("faithful: could not send the node summary: %s", e)
