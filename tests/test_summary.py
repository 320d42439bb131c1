"""What guidance did, in one line per node: built from the run report and sent to the page after the run; and
refinement progress shown on the node that refines, with the sampler's step bar kept monotone."""
import asyncio
import json

from tools.graphs import chain, excite_graph
from tools.host import TINY_CKPT_NAME as CKPT_NAME


def _summarize(label, report):
    from faithful.nodes.summary import summarize
    return summarize(label, report)


def test_excite_summary_names_attention_and_refinement(pack):
    rep = [dict(step=0, losses={"attend_and_excite": [0.9]}, refinement_iterations=4, skipped=None),
           dict(step=1, losses={"attend_and_excite": [0.19]}, refinement_iterations=0, skipped=None)]
    text = _summarize("attend_and_excite", rep)
    assert "0.81 of attention at step 2" in text and "(from 0.10)" in text and "4 refinement updates" in text


def test_summary_warns_when_guidance_changed_nothing(pack):
    assert _summarize("syngen", []).startswith("warning: guidance changed nothing")
    rep = [dict(step=0, losses={"syngen": [float("nan")]}, refinement_iterations=0, skipped="non-finite")]
    assert "non-finite" in _summarize("syngen", rep) and _summarize("syngen", rep).startswith("warning")
    rep = [dict(step=0, losses={"infsplign": [0.5]}, skipped=None), dict(step=3, losses={"infsplign": [0.2]}, skipped=None)]
    assert _summarize("infsplign", rep) == "loss 0.5 at step 1 -> 0.2 at step 4; 2 guided steps"


async def _messages(server, graph, timeout=600):
    """(faithful.summary payloads, progress payloads) of one prompt, read from the page's websocket."""
    import aiohttp
    got, progress = [], []
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{server.url.replace('http', 'ws')}/ws?clientId={server.client_id}") as ws:
            pid = await asyncio.to_thread(server.queue, graph)
            async with asyncio.timeout(timeout):
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    m = json.loads(msg.data)
                    if m.get("type") == "faithful.summary":
                        got.append(m["data"])
                    if m.get("type") == "progress":
                        progress.append(m["data"])
                    if m.get("type") in ("executing", "execution_success") and m["data"].get("prompt_id") == pid \
                            and m["data"].get("node") is None:
                        break
                    if m.get("type") == "execution_error":
                        raise AssertionError(m["data"].get("exception_message"))
    return got, progress


def test_each_guidance_node_gets_its_summary_through_the_server(server):
    g = excite_graph(CKPT_NAME, prompt="a cat to the left of a frog", subjects="cat, frog", seed=61, steps=4,
                     prefix="summary", attention_factor=4, max_refinement_steps=2)
    g["excite"]["inputs"]["refinement_thresholds"] = "0:0.99"  # unreachable: step 0 refines its 2 updates
    g = chain(g, "spatial", "FaithfulSpatialAlignment", {"clip": ["ckpt", 1], "prompt": "a cat to the left of a frog",
                                                        "relations": "cat left of frog"})
    summaries, progress = asyncio.run(_messages(server, g))
    got = {d["node"]: d["text"] for d in summaries}
    assert set(got) == {"excite", "spatial"}, got
    assert "of attention" in got["excite"] and "2 refinement updates" in got["excite"]
    assert got["spatial"].startswith("loss ") and "4 guided steps" in got["spatial"]
    # Refinement is shown on Excite Tokens; the sampler's bar only moves forward, step by step.
    assert any(p["node"] == "excite" for p in progress), progress
    steps = [p["value"] for p in progress if p["node"] == "sampler"]
    assert steps and steps == sorted(steps) and max(steps) == 4, steps
