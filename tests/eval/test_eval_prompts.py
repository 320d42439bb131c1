"""Prompt-set generators: grammar, counts, determinism by seed, writers/readers and the CLI."""
from __future__ import annotations

import collections
import itertools
import json
import os
import re
import subprocess
import sys

import pytest

from faithful_eval import prompts as P

# Host-independent (or, for the fresh-clone example run, checked once): run on the first test host only.
pytestmark = pytest.mark.once


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ---- DVMP ----------------------------------------------------------------------------------------------

CATEGORY = {**{n: "animal" for n in P.DVMP_ANIMALS}, **{n: "object" for n in P.DVMP_OBJECTS},
            **{n: "fruit" for n in P.DVMP_FRUIT}}


def parse_dvmp_phrase(ph: str):
    words = ph.split()
    art, *mods, noun = words
    return art, mods, noun


def test_dvmp_vocabulary_sizes():
    assert (len(P.DVMP_ANIMALS), len(P.DVMP_OBJECTS), len(P.DVMP_FRUIT), len(P.DVMP_COLORS)) == (16, 18, 4, 13)
    assert [len(P.DVMP_MODIFIERS[k]) for k in ("animal", "object", "fruit")] == [4, 7, 2]


def test_dvmp_grammar_on_many_prompts():
    recs = P.dvmp_prompts(2000, seed=1)
    assert len(recs) == 2000 and len({r["prompt"] for r in recs}) == 2000
    n_phr = collections.Counter()
    colour_first = phrases = 0
    for r in recs:
        phs = r["prompt"].split(" and ")
        assert phs == r["segments"]
        assert 1 <= len(phs) <= 3 and len(set(phs)) == len(phs)
        assert r["num_phrases"] == len(phs)
        n_phr[len(phs)] += 1
        nmods = 0
        for ph, noun, mods in zip(phs, r["objects"], r["modifiers"]):
            art, words, nn = parse_dvmp_phrase(ph)
            assert nn == noun and words == mods and mods, ph
            assert art == ("an" if mods[0][0] in "aeiou" else "a"), ph
            cat = CATEGORY[noun]
            colours = [w for w in mods if w in P.DVMP_COLORS]
            cat_mods = [w for w in mods if w not in P.DVMP_COLORS]
            assert len(colours) <= 1 and (not colours or mods[0] == colours[0]), ph  # one colour, in front
            assert set(cat_mods) <= set(P.DVMP_MODIFIERS[cat]) and len(set(cat_mods)) == len(cat_mods), ph
            assert len(cat_mods) <= (1 if cat == "fruit" else 2), ph
            colour_first += bool(colours)
            phrases += 1
            nmods += len(mods)
        assert r["num_modifiers"] == nmods and r["nouns"] == r["objects"]
    # 1-3 phrases uniformly, but a repeated prompt is redrawn and one-phrase prompts run out first (a fruit
    # phrase has 164 spellings); a colour on about 1/3 of the phrases (more, as bare phrases are redrawn)
    assert n_phr[1] < n_phr[2] and n_phr[1] < n_phr[3] and abs(n_phr[2] - n_phr[3]) < 100, n_phr
    first = collections.Counter(r["num_phrases"] for r in recs[:150])
    assert all(35 < first[k] < 65 for k in (1, 2, 3)), first
    assert 0.3 < colour_first / phrases < 0.5
    # every category and both fruit modifiers show up; the article "an" appears ("an orange ...")
    assert {CATEGORY[o] for r in recs for o in r["objects"]} == {"animal", "object", "fruit"}
    assert any(r["prompt"].startswith("an ") or " and an " in r["prompt"] for r in recs)


def test_dvmp_deterministic_by_seed():
    a, b, c = P.dvmp_prompts(200, 0), P.dvmp_prompts(200, 0), P.dvmp_prompts(200, 1)
    assert a == b and a != c
    assert [r["id"] for r in a] == [f"dvmp_{i:04d}" for i in range(200)]
    assert P.dvmp_prompts(50, 0) == a[:50]  # a shorter set is a prefix of a longer one with the same seed
    assert P.generate("dvmp") == a  # 200 by default


# ---- Attend-and-Excite ---------------------------------------------------------------------------------

def test_attend_and_excite_counts_and_templates():
    recs = P.attend_and_excite_prompts(0)
    assert len(recs) == 276 and len({r["prompt"] for r in recs}) == 276
    kinds = collections.Counter(r["kind"] for r in recs)
    assert kinds == {"animal_animal": 66, "animal_object": 144, "object_object": 66}
    colours = "|".join(P.AE_COLORS)
    aa = [r for r in recs if r["kind"] == "animal_animal"]
    assert {tuple(r["objects"]) for r in aa} == set(itertools.combinations(P.AE_ANIMALS, 2))
    assert all(r["prompt"] == f"a {r['objects'][0]} and a {r['objects'][1]}" for r in aa)
    ao = [r for r in recs if r["kind"] == "animal_object"]
    assert {tuple(r["objects"]) for r in ao} == set(itertools.product(P.AE_ANIMALS, P.AE_OBJECTS))
    wear = [r for r in ao if r["objects"][1] in ("glasses", "bow", "crown")]
    assert len(wear) == 36 and all(r["prompt"] == f"a {r['objects'][0]} with a {r['objects'][1]}" for r in wear)
    other = [r for r in ao if r not in wear]
    assert len(other) == 108
    for r in other:
        m = re.fullmatch(rf"a (\w+) and a ({colours}) (\w+)", r["prompt"])
        assert m and [m.group(1), m.group(3)] == r["objects"] and r["modifiers"] == [[], [m.group(2)]], r
    oo = [r for r in recs if r["kind"] == "object_object"]
    assert {tuple(r["objects"]) for r in oo} == set(itertools.combinations(P.AE_OBJECTS, 2))
    for r in oo:
        assert re.fullmatch(rf"a ({colours}) (\w+) and a ({colours}) (\w+)", r["prompt"]), r
    assert any(r["prompt"].startswith("a elephant") for r in recs)  # articles are literally "a"
    assert recs[-1]["prompt"].endswith("apple")


def test_attend_and_excite_seed_moves_only_colours():
    a, b = P.attend_and_excite_prompts(0), P.attend_and_excite_prompts(5)
    assert a == P.attend_and_excite_prompts(0)
    assert [r["objects"] for r in a] == [r["objects"] for r in b] and [r["kind"] for r in a] == [r["kind"] for r in b]
    assert [r["prompt"] for r in a[:66]] == [r["prompt"] for r in b[:66]]
    assert sum(x["prompt"] != y["prompt"] for x, y in zip(a, b)) > 100
    used = {c for r in a for m in r["modifiers"] for c in m}
    assert len(used) >= 9  # colours are spread over the palette


# ---- VISOR -------------------------------------------------------------------------------------------------

def test_visor_full_set():
    assert len(P.COCO_CLASSES) == 80 and len(set(P.COCO_CLASSES)) == 80
    assert {"traffic light", "hot dog", "teddy bear", "hair drier", "person", "toothbrush"} <= set(P.COCO_CLASSES)
    recs = P.visor_prompts()
    assert len(recs) == 25280 and len({r["prompt"] for r in recs}) == 25280
    assert collections.Counter(r["relation"] for r in recs) == {rel: 6320 for rel in P.VISOR_RELATIONS}
    ordered = {(r["objects"][0], r["objects"][1], r["relation"]) for r in recs}
    assert len(ordered) == 25280  # every ordered pair x relation exactly once
    assert all((b, a, rel) in ordered for a, b, rel in ordered)  # both orders
    for r in recs[:400] + recs[-400:]:
        a, b = r["objects"]
        assert r["prompt"] == f"{P.article(a)} {a} {r['relation']} {P.article(b)} {b}"
    texts = {r["prompt"] for r in recs}
    assert "an airplane to the left of an elephant" in texts and "a person above a bicycle" in texts
    assert "a hair drier below an umbrella" in texts and "a teddy bear to the right of a hot dog" in texts
    full = P.visor_prompts(include_all=True)
    assert len(full) == 31680
    assert collections.Counter(r["kind"] for r in full) == {"spatial": 25280, "and": 6320, "single": 80}
    assert "an apple and a traffic light" in {r["prompt"] for r in full}


def test_visor_sampling():
    full = P.visor_prompts()
    s = P.visor_prompts(500, seed=3)
    assert len(s) == 500 and s == P.visor_prompts(500, seed=3) and s != P.visor_prompts(500, seed=4)
    by_id = {r["id"]: r for r in full}
    assert all(by_id[r["id"]] == r for r in s)  # a sample keeps the full set's ids
    assert [r["id"] for r in s] == sorted(r["id"] for r in s)
    assert len(P.generate("visor", 20, 0)) == 20


# ---- records, writers, readers, CLI ----------------------------------------------------------------------

def test_writers_round_trip(tmp_path):
    recs = P.dvmp_prompts(30, 2) + P.attend_and_excite_prompts(0)[60:70] + P.visor_prompts(10, 1)
    for ext in ("csv", "json", "jsonl"):
        path = P.write(recs, str(tmp_path / f"set.{ext}"))
        back = P.load_prompts(path)
        assert back == recs, ext
    with open(tmp_path / "set.csv") as f:
        header = f.readline().strip().split(",")
    assert header[:6] == ["id", "prompt", "kind", "objects", "relation", "modifiers"]
    (tmp_path / "plain.txt").write_text("a cat and a dog\n\na red car\n")
    assert [r["prompt"] for r in P.load_prompts(str(tmp_path / "plain.txt"))] == ["a cat and a dog", "a red car"]


def test_pick_wraps_and_caches():
    r0, n = P.pick("attend_and_excite", 0, seed=0)
    assert n == 276 and r0["prompt"] == "a cat and a dog"
    assert P.pick("attend_and_excite", 276 + 70, 0)[0] == P.attend_and_excite_prompts(0)[70]
    assert P.pick("dvmp", 5, 9, n=20) == (P.dvmp_prompts(20, 9)[5], 20)
    rv, nv = P.pick("visor", 3, 0)
    assert nv == 25280 and rv["relation"] == "to the right of"
    with pytest.raises(ValueError):
        P.pick("nope", 0)


def test_cli(tmp_path):
    out = tmp_path / "x.csv"
    r = subprocess.run([sys.executable, "-m", "faithful_eval.prompts", "dvmp", "--n", "200", "--seed", "0", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert P.load_prompts(str(out)) == P.dvmp_prompts(200, 0)
    r = subprocess.run([sys.executable, "-m", "faithful_eval.prompts", "ae", "--out", "-"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 276 and lines[0]["kind"] == "animal_animal"
    r = subprocess.run([sys.executable, "-m", "faithful_eval.prompts", "visor", "--out", str(tmp_path / "v.jsonl")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "25280 prompts" in r.stderr and len(P.load_prompts(str(tmp_path / "v.jsonl"))) == 25280


def test_node_in_process(pack):
    from faithful.nodes.prompt_set import NODES, PromptFromSet
    assert NODES == [PromptFromSet]
    schema = PromptFromSet.define_schema()
    assert schema.node_id == "FaithfulPromptFromSet" and schema.description
    assert all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs)
    out = PromptFromSet.execute("visor", 25280 + 8, 0)
    rec = P.visor_prompts()[8]
    assert tuple(out.result) == (rec["prompt"], ", ".join(rec["objects"]), rec["relation"], rec["id"], 25280)
    out = PromptFromSet.execute("dvmp", 3, 4, 10)
    rec = P.dvmp_prompts(10, 4)[3]
    assert out.result[0] == rec["prompt"] and out.result[2] == "" and out.result[4] == 10
