"""The batch runner against real headless ComfyUI servers on loopback (EmptyImage -> SaveImage, no weights).

The seed drives EmptyImage's colour and the method its width, so every file can be checked for being the
right job's picture. One server is killed mid-run, then the runner itself is killed, then the run resumes.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
from PIL import Image

from faithful_eval import prompts as P
from faithful_eval import jobs as J
from faithful_eval import manifest as M
from faithful_eval import runner as R

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 32, "batch_size": 1, "color": 0},
          "_meta": {"title": "canvas"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "eval/{method}_{seed}_{prompt}"},
          "_meta": {"title": "Save Image"}},
}
METHODS = {"bindings": {"seed": "1.inputs.color"},
           "methods": {"narrow": {"1.width": 64}, "wide": {"canvas.width": 96}}}
WIDTH = {"narrow": 64, "wide": 96}
SEEDS = [1000, 70000, 5000000]


def rgb(seed):
    return ((seed >> 16) & 255, (seed >> 8) & 255, seed & 255)


def write_inputs(tmp, records):
    wf = os.path.join(tmp, "wf_api.json")
    with open(wf, "w") as f:
        json.dump(WORKFLOW, f)
    mp = os.path.join(tmp, "methods.json")
    with open(mp, "w") as f:
        json.dump(METHODS, f)
    pp = P.write_json(records, os.path.join(tmp, "set.json"))
    return wf, mp, pp


def cli(wf, mp, pp, servers, out, *extra):
    return [sys.executable, "-m", "faithful_eval.runner", "--workflow", wf, "--prompts", pp,
            "--seeds", ",".join(map(str, SEEDS)), "--methods", mp, "--servers", ",".join(servers), "--out", out,
            *extra]


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there once the socket closes


def check_images(out, records):
    slugs = J.assign_slugs(records)
    for slug in slugs:
        folder = os.path.join(out, slug)
        expected = {f"{m}_{s}.png" for m in WIDTH for s in SEEDS}
        assert set(os.listdir(folder)) == expected, f"{slug}: {sorted(os.listdir(folder))}"
        for m in WIDTH:
            for s in SEEDS:
                im = Image.open(os.path.join(folder, f"{m}_{s}.png")).convert("RGB")
                assert im.size == (WIDTH[m], 32)
                assert im.getpixel((3, 3)) == rgb(s)
    entries = {e for e in os.listdir(out)}
    assert entries == set(slugs) | {M.MANIFEST, M.PROMPTS_INDEX}, entries


def test_kill_a_server_then_the_runner_then_resume(loopback_servers, tmp_path):
    a, b, c = loopback_servers["a"], loopback_servers["b"], loopback_servers["c"]
    records = P.attend_and_excite_prompts(0)[60:64]  # animal-animal and animal-object prompts
    wf, mp, pp = write_inputs(str(tmp_path), records)
    out = str(tmp_path / "results")
    manifest = os.path.join(out, M.MANIFEST)
    n_jobs = len(records) * len(SEEDS) * len(WIDTH)

    def done_count():
        return sum(1 for e in M.Manifest.read(manifest) if e.get("event") == "done")

    proc = subprocess.Popen(cli(wf, mp, pp, [a.url, b.url], out, "--poll", "0.4"), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        killed_b = False
        t0 = time.time()
        while time.time() - t0 < 90 and proc.poll() is None:
            n = done_count()
            if not killed_b and n >= 3:
                b.kill()
                killed_b = True
            if killed_b and n >= 12 and any(e.get("event") == "server_down" for e in M.Manifest.read(manifest)):
                os.kill(proc.pid, signal.SIGKILL)  # the runner dies mid-run, as on Ctrl-\ or a reboot
                break
            time.sleep(0.02)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    log1 = proc.stdout.read().decode(errors="replace")
    assert killed_b, log1
    assert proc.returncode == -signal.SIGKILL, f"the first run finished before it could be interrupted:\n{log1}"

    ev1 = M.Manifest.read(manifest)
    run1 = ev1[0]["run"]
    done1 = [e["key"] for e in ev1 if e.get("event") == "done"]
    assert 12 <= len(done1) < n_jobs
    assert len(done1) == len(set(done1))
    downs = [e for e in ev1 if e.get("event") == "server_down"]
    assert [d["server"] for d in downs] == [b.url], log1
    # the job that was in flight on b went back to the queue; b got nothing after it died
    requeued = [e["key"] for e in ev1 if e.get("event") == "requeue" and e["server"] == b.url]
    assert requeued, log1
    t_down = downs[0]["time"]
    assert not [e for e in ev1 if e.get("event") == "submit" and e["server"] == b.url and e["time"] > t_down]
    for k in requeued:
        if k in done1:
            assert [e["server"] for e in ev1 if e.get("event") == "done" and e["key"] == k] == [a.url]

    # resume on the surviving server and a fresh one
    r2 = subprocess.run(cli(wf, mp, pp, [a.url, c.url], out), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert f"{len(done1)} already done" in r2.stderr

    ev = M.Manifest.read(manifest)
    run2 = [e for e in ev if e.get("event") == "run" and e["run"] != run1]
    assert len(run2) == 1 and run2[0]["skipped"] == len(done1) and run2[0]["pending"] == n_jobs - len(done1)
    ev2 = [e for e in ev if e.get("run") == run2[0]["run"]]
    submitted2 = [e["key"] for e in ev2 if e.get("event") == "submit"]
    assert not set(submitted2) & set(done1), "a finished job was run again after the resume"
    assert len(submitted2) == len(set(submitted2)) == n_jobs - len(done1)
    dones = collections.Counter(e["key"] for e in ev if e.get("event") == "done")
    assert len(dones) == n_jobs and set(dones.values()) == {1}
    assert {e["server"] for e in ev2 if e.get("event") == "done"} <= {a.url, c.url}
    assert not [e for e in ev if e.get("event") == "error"]
    check_images(out, records)
    index = json.load(open(os.path.join(out, M.PROMPTS_INDEX)))
    assert sorted(r["id"] for r in index) == sorted(r["id"] for r in records)

    # a third run has nothing to do
    r3 = subprocess.run(cli(wf, mp, pp, [a.url], out, "--quiet"), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r3.returncode == 0
    ev3 = M.Manifest.read(manifest)[len(ev):]
    assert [e["event"] for e in ev3] == ["run", "end"] and ev3[0]["pending"] == 0


def test_dead_server_failed_jobs_and_changed_methods(loopback_servers, tmp_path):
    a = loopback_servers["a"]
    dead = _dead_url()
    records = P.dvmp_prompts(2, seed=7)
    methods = {"narrow": {"1.width": 64}, "broken": {"1.width": "not a number"}}
    jobs = J.make_jobs(WORKFLOW, records, [11, 12], methods, {"seed": "1.color"})
    out = str(tmp_path / "out")
    s1 = R.Runner(jobs, [dead, a.url], out, progress=False, poll=0.1).run()
    assert s1["done"] == 4 and s1["errors"] == 4 and s1["pending"] == 0 and s1["dead_servers"] == [dead]
    assert all("rejected" in m for m in s1["error_messages"].values())
    assert all(k.split("/")[1].startswith("broken_") for k in s1["error_messages"])

    # fix the broken method, widen the narrow one for seed 12 only by deleting a file: only those rerun
    methods = {"narrow": {"1.width": 64}, "broken": {"1.width": 80}}
    slug0 = J.assign_slugs(records)[0]
    os.remove(os.path.join(out, slug0, "narrow_12.png"))
    # as if the first run had died writing that picture again; plus partial files that are not the runner's
    own_part = os.path.join(out, slug0, "narrow_12.png.part")
    others = [os.path.join(out, "x.part"), os.path.join(out, slug0, "download.part")]
    for p in [own_part] + others:
        with open(p, "wb") as f:
            f.write(b"half")
    jobs = J.make_jobs(WORKFLOW, records, [11, 12], methods, {"seed": "1.color"})
    seen = []
    s2 = R.Runner(jobs, [a.url], out, progress=False, poll=0.1, on_event=seen.append).run()
    assert s2["skipped"] == 3 and s2["done"] == 5 and s2["errors"] == 0
    rerun = sorted(e["key"] for e in seen if e["event"] == "done")
    assert rerun == sorted([f"{slug0}/narrow_12"] + [f"{s}/broken_{k}" for s in J.assign_slugs(records) for k in (11, 12)])
    assert Image.open(os.path.join(out, slug0, "broken_12.png")).size == (80, 32)
    assert not os.path.exists(own_part) and Image.open(os.path.join(out, slug0, "narrow_12.png")).size == (64, 32)
    assert all(os.path.exists(p) for p in others)

    # a changed override changes the graph hash, so that method is redone and the other is not
    methods["narrow"] = {"1.width": 72}
    jobs = J.make_jobs(WORKFLOW, records, [11, 12], methods, {"seed": "1.color"})
    s3 = R.Runner(jobs, [a.url], out, progress=False, poll=0.1).run()
    assert s3["skipped"] == 4 and s3["done"] == 4
    assert Image.open(os.path.join(out, slug0, "narrow_11.png")).size == (72, 32)


def test_prompt_from_set_node_in_a_server(loopback_servers):
    """The node is listed with tooltips by a server that loaded the pack, and runs in a graph."""
    c = loopback_servers["c"]
    info = requests.get(c.url + "/object_info/FaithfulPromptFromSet", timeout=30).json()
    assert "FaithfulPromptFromSet" in info, c.log()[-3000:]
    spec = info["FaithfulPromptFromSet"]
    assert spec["category"] == "faithful/evaluation" and spec["display_name"] == "Prompt From Set"
    assert spec["description"]
    for group in ("required", "optional"):
        for name, s in spec["input"].get(group, {}).items():
            assert s[1].get("tooltip"), name
    assert all(spec["output_tooltips"]) and len(spec["output_tooltips"]) == len(spec["output"]) == 5
    # prompt -> SaveImage prefix, count -> EmptyImage width: the picture proves what the node returned
    g = {"p": {"class_type": "FaithfulPromptFromSet", "inputs": {"prompt_set": "attend_and_excite", "index": 276 + 70, "seed": 3}},
         "1": {"class_type": "EmptyImage", "inputs": {"width": ["p", 4], "height": 8, "batch_size": 1, "color": 5}},
         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": ["p", 0]}}}
    r = requests.post(c.url + "/prompt", json={"prompt": g, "client_id": "t"}, timeout=30)
    assert r.status_code == 200, r.text
    pid = r.json()["prompt_id"]
    for _ in range(200):
        h = requests.get(f"{c.url}/history/{pid}", timeout=10).json()
        if pid in h and h[pid]["status"].get("completed") is not None:
            break
        time.sleep(0.1)
    assert h[pid]["status"]["status_str"] == "success", h[pid]["status"]
    im = h[pid]["outputs"]["2"]["images"][0]
    want = P.attend_and_excite_prompts(3)[70]["prompt"]
    assert im["filename"].startswith(want + "_")
    data = requests.get(c.url + "/view", params={"filename": im["filename"], "subfolder": im["subfolder"], "type": "output"}, timeout=10)
    from io import BytesIO
    assert Image.open(BytesIO(data.content)).size == (276, 8)


def test_only_its_own_partial_files_are_removed(tmp_path):
    """``--out ~`` must not delete other programs' partial downloads: only the .part files of jobs the
    manifest says this runner submitted (and its prompts index) are removed at start."""
    records = P.dvmp_prompts(1, seed=3)
    jobs = J.make_jobs(WORKFLOW, records, [11], {"narrow": {"1.width": 64}}, {"seed": "1.color"})
    out = tmp_path / "home"
    slug = jobs[0].slug
    (out / slug).mkdir(parents=True)
    (out / "Downloads").mkdir()
    # a runner killed while writing its picture: the manifest has the submission, the file is half written
    M.Manifest(str(out / M.MANIFEST)).write({"event": "submit", "key": jobs[0].key, "run": "earlier"})
    own = [out / slug / "narrow_11.png.part", out / slug / "narrow_11_1.webp.part", out / (M.PROMPTS_INDEX + ".part")]
    others = [out / "x.part", out / "Downloads" / "big.iso.part", out / slug / "notes.part",
              out / slug / "narrow_11.png.part.part", out / slug / "wide_11.png.part",  # no such job submitted
              out / "narrow_11.png.part"]
    for p in own + others:
        p.write_bytes(b"half")
    s = R.Runner(jobs, [_dead_url()], str(out), progress=False).run()
    assert s["pending"] == 1 and s["done"] == 0
    assert [p.name for p in own if p.exists()] == []
    assert [p.name for p in others if not p.exists()] == []


def test_tools_server_uses_the_runners_client(loopback_servers, tmp_path):
    """tools.server.Server and the runner share faithful_eval.client: one set of errors (ComfyError)."""
    from faithful_eval import client as C
    a = loopback_servers["a"]
    assert a.client.url == a.url and a.client.client_id == a.client_id
    with pytest.raises(C.PromptRejected) as e:
        a.queue({"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert isinstance(e.value, C.ComfyError) and e.value.status == 400 and "rejected (400)" in str(e.value)
    g = json.loads(json.dumps(WORKFLOW))
    g["1"]["inputs"]["color"] = 0x123456
    g["2"]["inputs"]["filename_prefix"] = "client_check"
    entry = a.run(g, timeout=60)
    assert C.failure_message(entry) is None
    (data,) = a.images(entry)
    from io import BytesIO
    assert Image.open(BytesIO(data)).convert("RGB").getpixel((0, 0)) == rgb(0x123456)
    with pytest.raises(C.JobFailed, match="timed out"):
        a.client.wait("no-such-prompt", timeout=0.2, poll=0.1)
