"""How the runner places prompts, seeds and method overrides into an API graph (no server needed)."""
from __future__ import annotations

import json
import os

import pytest

from faithful_eval import graph as G
from faithful_eval import jobs as J
from faithful_eval import manifest as M
from faithful_eval import runner as R

REC = {"id": "ae_070", "prompt": "a cat and a red chair", "kind": "animal_object", "objects": ["cat", "chair"]}

SD_GRAPH = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "placeholder", "clip": ["4", 1]}, "_meta": {"title": "PROMPT"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "10": {"class_type": "FaithfulExciteTokens", "inputs": {"model": ["4", 0], "clip": ["4", 1], "prompt": "{prompt}",
                                                            "subjects": "{subjects}", "scale_factor": 20.0},
           "_meta": {"title": "Excite"}},
    "3": {"class_type": "KSampler", "inputs": {"model": ["10", 0], "seed": 1, "steps": 20, "cfg": 7.5,
                                               "positive": ["6", 0], "negative": ["7", 0]}, "_meta": {"title": "seed"}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "eval/{id}_{method}_{seed}"}},
}


def test_titles_placeholders_and_overrides():
    g, placed = G.build_graph(SD_GRAPH, REC, 42, "baseline", {"Excite.scale_factor": 0, "3.inputs.steps": 5}, {}, "slug")
    assert g["6"]["inputs"]["text"] == "a cat and a red chair"
    assert g["3"]["inputs"]["seed"] == 42 and g["3"]["inputs"]["steps"] == 5
    assert g["10"]["inputs"]["prompt"] == "a cat and a red chair" and g["10"]["inputs"]["subjects"] == "cat, chair"
    assert g["10"]["inputs"]["scale_factor"] == 0
    assert g["9"]["inputs"]["filename_prefix"] == "eval/ae_070_baseline_42"
    assert g["7"]["inputs"]["text"] == "blurry" and g["6"]["inputs"]["clip"] == ["4", 1]
    assert {"prompt", "seed", "subjects", "id", "method"} <= placed
    assert SD_GRAPH["6"]["inputs"]["text"] == "placeholder"  # the template is not modified


def test_explicit_bindings_win_and_seed_placeholder_keeps_int():
    g0 = json.loads(json.dumps(SD_GRAPH))
    g0["3"]["_meta"]["title"] = "sampler"
    g0["3"]["inputs"]["seed"] = "{seed}"
    g, placed = G.build_graph(g0, REC, 7, "m", {}, {"prompt": ["7.text"], "relation": "9.filename_prefix"}, "s")
    assert g["3"]["inputs"]["seed"] == 7 and isinstance(g["3"]["inputs"]["seed"], int)
    assert g["7"]["inputs"]["text"] == REC["prompt"] and g["9"]["inputs"]["filename_prefix"] == ""
    with pytest.raises(G.WorkflowError, match="not a field"):
        G.build_graph(g0, REC, 7, "m", {}, {"nonsense": "7.text"}, "s")


def test_bypass_rewires_consumers():
    g, _ = G.build_graph(SD_GRAPH, REC, 1, "sd", {"bypass": ["Excite"]}, {}, "s")
    assert "10" not in g and g["3"]["inputs"]["model"] == ["4", 0]
    g, _ = G.build_graph(SD_GRAPH, REC, 1, "sd", {"bypass": {"10": "model"}}, {}, "s")
    assert "10" not in g and g["3"]["inputs"]["model"] == ["4", 0]


def test_missing_prompt_or_seed_is_refused():
    g0 = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    with pytest.raises(G.WorkflowError, match="no place for the prompt and the seed"):
        J.make_jobs(g0, [REC], [0], {"m": {}}, {})
    jobs = J.make_jobs(g0, [REC], [0, 1], {"a": {}, "b": {"1.width": 16}}, {"seed": "1.color", "prompt": "2.filename_prefix"})
    assert [j.key for j in jobs] == ["a_cat_and_a_red_chair/a_0", "a_cat_and_a_red_chair/b_0",
                                     "a_cat_and_a_red_chair/a_1", "a_cat_and_a_red_chair/b_1"]
    assert len({j.sha for j in jobs}) == 4
    g0["1"]["_meta"] = {"title": "SEED"}  # EmptyImage has four int inputs: the title alone is ambiguous
    with pytest.raises(G.WorkflowError, match="explicit path"):
        J.make_jobs(g0, [REC], [0], {"m": {}}, {"prompt": "2.filename_prefix"})


def test_workflow_and_methods_files(tmp_path):
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(G.WorkflowError, match="Export \\(API\\)"):
        G.load_workflow(str(ui))
    api = tmp_path / "api.json"
    api.write_text(json.dumps({"prompt": SD_GRAPH}))
    assert G.load_workflow(str(api)) == SD_GRAPH
    other = tmp_path / "other.json"
    other.write_text(json.dumps(SD_GRAPH))
    mf = tmp_path / "methods.json"
    mf.write_text(json.dumps({"bindings": {"seed": "3.seed"}, "methods": {"base": {"bypass": ["10"]}, "alt": {"workflow": "other.json"}}}))
    methods, bindings, wfs = J.load_methods(str(mf))
    assert list(methods) == ["base", "alt"] and bindings == {"seed": "3.seed"} and wfs["alt"] == SD_GRAPH
    mf.write_text(json.dumps({"bad name": {}}))
    with pytest.raises(G.WorkflowError, match="letters"):
        J.load_methods(str(mf))
    mf.write_text(json.dumps({"m": {"steps": 3}}))
    with pytest.raises(G.WorkflowError, match="neither a path"):
        J.load_methods(str(mf))
    assert J.load_methods(None) == ({"default": {}}, {}, {})


def test_seeds_slugs_and_manifest(tmp_path):
    assert J.parse_seeds("0,1,2") == [0, 1, 2]
    assert J.parse_seeds("3-5, 1, 4") == [3, 4, 5, 1]
    recs = [{"id": "a", "prompt": "A cat!"}, {"id": "b", "prompt": "a cat"}, {"id": "c", "prompt": "a dog"}]
    assert J.assign_slugs(recs) == ["a_cat__a", "a_cat__b", "a_dog"]
    assert J.slugify("x" * 300) == "x" * 100
    path = str(tmp_path / "m.jsonl")
    m = M.Manifest(path)
    m.write({"event": "done", "key": "k1", "files": ["f1.png"]})
    with open(path, "a") as f:
        f.write('{"event": "done", "key": "k2", "fi')  # a writer killed mid-line
    m = M.Manifest(path)
    m.write({"event": "done", "key": "k3", "files": ["f3.png"]})
    ev = M.Manifest.read(path)
    assert [e["key"] for e in ev] == ["k1", "k3"]
    (tmp_path / "f1.png").write_bytes(b"x")
    assert list(M.finished(ev, str(tmp_path))) == ["k1"]  # k3's file is missing: not finished


def test_cli_dry_run(tmp_path, capsys):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(SD_GRAPH))
    rc = R.main(["--workflow", str(wf), "--prompts", "attend_and_excite", "--seeds", "0-1", "--limit", "3",
                 "--out", str(tmp_path / "o"), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0 and out.count("/default_") == 6 and "a_cat_and_a_dog/default_1" in out
    assert not os.path.exists(tmp_path / "o")
    rc = R.main(["--workflow", str(wf), "--prompts", "nothing-here.json", "--out", str(tmp_path / "o")])
    assert rc == 64
