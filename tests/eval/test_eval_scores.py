"""Scorers: a tiny random CLIP (and OWL-ViT) saved to a folder and loaded back through our loaders, and the
aggregation arithmetic (min over parts, SynGen wins, VISOR numbers) on hand-made values."""
from __future__ import annotations

import csv
import json
import math
import os
import re

import numpy as np
import pytest
from PIL import Image

from faithful_eval import prompts as P
from faithful_eval import runner as R
from faithful_eval import scores as S



def host_tokenizer_dir() -> str:
    """The CLIP BPE files the host under test ships (comfy/sd1_tokenizer beside comfy/sd1_clip.py), found through
    the host tests/conftest.py put on sys.path, whichever host and folder that is."""
    import comfy.sd1_clip
    return os.path.join(os.path.dirname(os.path.abspath(comfy.sd1_clip.__file__)), "sd1_tokenizer")


def _tokenizer(max_len):
    from transformers import CLIPTokenizer
    d = host_tokenizer_dir()
    assert os.path.isfile(os.path.join(d, "vocab.json")), f"the host ships no CLIP tokenizer at {d}"
    return CLIPTokenizer.from_pretrained(d, local_files_only=True, model_max_length=max_len)


def test_tokenizer_comes_from_the_host_under_test():
    from tools.host import host_dir
    d = host_tokenizer_dir()
    assert os.path.realpath(d).startswith(os.path.realpath(host_dir()) + os.sep)
    assert _tokenizer(77)("a cat and a frog")["input_ids"][0] == 49406  # <|startoftext|>


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel
    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2),
        projection_dim=16)
    torch.manual_seed(0)
    d = str(tmp_path_factory.mktemp("tiny-clip"))
    CLIPModel(cfg).save_pretrained(d)
    _tokenizer(77).save_pretrained(d)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def scorer(tiny_clip):
    return S.load_clip(tiny_clip)


def images(n, size=(40, 36)):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


# ---- loading --------------------------------------------------------------------------------------------

def test_loader_refuses_anything_but_a_local_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        S.load_clip("openai/clip-vit-base-patch32")
    with pytest.raises(FileNotFoundError):
        S.load_clip(str(tmp_path))


def test_embeddings_match_the_model_forward(scorer):
    import torch
    texts = ["a cat and a dog", "a red chair", "a cat"]
    ims = images(2)
    t = scorer.encode_texts(texts)
    i = scorer.encode_images(ims)
    assert t.shape == (3, 16) and i.shape == (2, 16)
    assert np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5) and np.allclose(np.linalg.norm(i, axis=1), 1, atol=1e-5)
    tok = scorer.tokenizer(texts, padding=True, return_tensors="pt")
    px = scorer.image_processor(images=ims, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        ref = scorer.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=px)
    assert np.allclose(scorer.logit_scale * i @ t.T, ref.logits_per_image.numpy(), atol=1e-4)
    # paths work as well as images; a long prompt is truncated to the context length
    assert np.allclose(scorer.encode_texts([" ".join(["cat"] * 200)]).shape, (1, 16))


def test_template_average(scorer):
    tpl = S.IMAGENET_TEMPLATES
    assert len(tpl) == 80 and len(set(tpl)) == 80 and all(t.count("{}") == 1 for t in tpl)
    avg = scorer.encode_texts(["a cat"], tpl)[0]
    raw = scorer._encode_raw_texts([t.format("a cat") for t in tpl])
    want = raw.mean(0) / np.linalg.norm(raw.mean(0))
    assert np.allclose(avg, want, atol=1e-6)
    assert not np.allclose(avg, scorer.encode_texts(["a cat"])[0])


def test_clip_similarities_shapes_and_min(scorer, tmp_path):
    ims = images(3)
    ims[0].save(tmp_path / "0.png")
    prompts = ["a cat and a red chair", "a dog with a crown", "a sliced apple and a furry cat and a metal bowl"]
    res = S.clip_similarities(scorer, [str(tmp_path / "0.png")] + ims[1:], prompts)
    assert [len(r["parts"]) for r in res] == [2, 2, 3]
    for r, p, im in zip(res, prompts, [ims[0]] + ims[1:]):
        assert -1 <= r["full"] <= 1 and r["min_part"] == min(r["parts"])
        e = scorer.encode_images([im])[0]
        assert math.isclose(r["full"], float(e @ scorer.encode_texts([p])[0]), abs_tol=1e-5)
        assert math.isclose(r["parts"][-1], float(e @ scorer.encode_texts([S.split_parts(p)[-1]])[0]), abs_tol=1e-5)
    res_t = S.clip_similarities(scorer, ims[:1], prompts[:1], S.IMAGENET_TEMPLATES)
    assert res_t[0]["full"] != pytest.approx(res[0]["full"])


class StubScorer:
    """Known unit vectors instead of a model: the arithmetic can be checked by hand."""
    logit_scale = 10.0

    def __init__(self, text_vecs, image_vecs):
        self.t, self.i = text_vecs, image_vecs

    def encode_texts(self, texts, templates=None):
        return np.array([self.t[t] for t in texts], dtype=np.float64)

    def encode_images(self, ims):
        return np.array([self.i[k] for k in ims], dtype=np.float64)


def test_min_part_arithmetic_by_hand():
    assert S.split_parts("a cat and a red chair") == ["a cat", "a red chair"]
    assert S.split_parts("a dog with a crown") == ["a dog", "a crown"]
    assert S.split_parts("a cat with a hat and a dog") == ["a cat", "a hat", "a dog"]
    assert S.split_parts("a person above a bicycle") == ["a person above a bicycle"]
    s = 1 / math.sqrt(2)
    st = StubScorer({"a cat and a red chair": [1, 0, 0], "a cat": [s, s, 0], "a red chair": [0, 0, 1]},
                    {"im1": [0.6, 0.8, 0], "im2": [0, 0.6, 0.8]})
    r = S.clip_similarities(st, ["im1", "im2"], ["a cat and a red chair"] * 2)
    assert r[0]["full"] == pytest.approx(0.6) and r[0]["parts"] == pytest.approx([1.4 * s, 0.0]) and r[0]["min_part"] == 0
    assert r[1]["full"] == pytest.approx(0.0) and r[1]["parts"] == pytest.approx([0.6 * s, 0.8])
    assert r[1]["min_part"] == pytest.approx(0.6 * s)


# ---- SynGen ------------------------------------------------------------------------------------------------

def test_segment_scores_and_wins_by_hand():
    logits = [[2.0, 0.0], [0.0, 0.0], [1.0, 3.0]]  # 3 images x 2 segments
    e = math.exp
    seg0 = [e(2) / (e(2) + 1 + e(1)), 1 / (e(2) + 1 + e(1)), e(1) / (e(2) + 1 + e(1))]
    seg1 = [1 / (2 + e(3)), 1 / (2 + e(3)), e(3) / (2 + e(3))]
    want = [(a + b) / 2 for a, b in zip(seg0, seg1)]
    got = S.segment_scores(logits)
    assert got == pytest.approx(want) and got.sum() == pytest.approx(1.0)
    assert S.winner(["sd", "ae", "syngen"], got) == "syngen"
    assert S.winner(["a", "b"], [0.5, 0.5]) == "a"  # ties go to the first listed
    wins = S.count_wins([(["sd", "syngen"], [0.4, 0.6]), (["sd", "syngen"], [0.7, 0.3]), (["sd", "syngen"], [0.1, 0.9])],
                        methods=["sd", "syngen", "ae"])
    assert wins == {"sd": 1, "syngen": 2, "ae": 0}
    with pytest.raises(ValueError):
        S.segment_scores([[]])


def test_syngen_compare_with_stub_and_real_model(scorer):
    st = StubScorer({"a red car": [1, 0], "a blue dog": [0, 1]},
                    {"sd": [1, 0], "syngen": [0.6, 0.8], "ae": [0, 1]})
    res, wins = S.syngen_compare(st, [{"prompt": "a red car and a blue dog", "images": {m: m for m in ("sd", "syngen", "ae")}}],
                                 segments=lambda p: p.split(" and "))
    logits = 10.0 * np.array([[1, 0], [0.6, 0.8], [0, 1]])
    want = S.segment_scores(logits)
    assert list(res[0]["scores"].values()) == pytest.approx(list(want)) and res[0]["winner"] == ["sd", "syngen", "ae"][int(np.argmax(want))]
    assert sum(wins.values()) == 1
    # the real (tiny) model: 2 prompts x 3 methods, segments from the records
    recs = P.dvmp_prompts(2, 5)
    ims = images(6)
    items = [{"prompt": r["prompt"], "segments": r["segments"], "images": dict(zip(("a", "b", "c"), ims[3 * k:3 * k + 3]))}
             for k, r in enumerate(recs)]
    res, wins = S.syngen_compare(scorer, items)
    assert len(res) == 2 and sum(wins.values()) == 2 and set(wins) == {"a", "b", "c"}
    for r in res:
        assert sum(r["scores"].values()) == pytest.approx(1.0)  # softmax across images, then a mean
        assert r["winner"] == max(r["scores"], key=r["scores"].get)
    with pytest.raises(ValueError, match="no segments"):
        S.syngen_compare(scorer, [{"prompt": "x", "images": {"a": ims[0]}}])


# ---- VISOR --------------------------------------------------------------------------------------------------

def test_relations_and_check():
    left, right = (0, 0, 10, 10), (20, 0, 30, 10)
    top, bottom = (0, 0, 10, 10), (0, 20, 10, 30)
    assert S.relation_holds("to the left of", left, right) and not S.relation_holds("to the left of", right, left)
    assert S.relation_holds("to the right of", right, left)
    assert S.relation_holds("above", top, bottom) and S.relation_holds("below", bottom, top)
    assert not S.relation_holds("above", bottom, top)
    dets = [("a photo of a cat", right, 0.5), ("dog", left, 0.05), ("dog", (40, 0, 50, 10), 0.3)]
    # any pair counts: the cat is left of the second dog (the first dog is under the threshold)
    assert S.visor_check(dets, "cat", "dog", "to the left of") == {"both": True, "correct": True, "n_a": 1, "n_b": 1}
    assert S.visor_check(dets, "cat", "dog", "to the right of")["correct"] is False
    assert S.visor_check(dets, "cat", "dog", "to the right of", threshold=0.01)["correct"] is True
    assert S.visor_check(dets, "cat", "teddy bear", "above") == {"both": False, "correct": False, "n_a": 1, "n_b": 0}
    with pytest.raises(ValueError):
        S.normalize_relation("next to")


def test_visor_reads_the_shared_relation_vocabulary(monkeypatch):
    """VISOR's relations are the pack's phrases (guidance_core/relations.py), not substrings of words."""
    from guidance_core import relations as REL
    want = {"left_of": "left", "right_of": "right", "above": "above", "below": "below"}
    for phrase, rel in REL.ALIASES.items():
        if rel in want:
            assert S.normalize_relation(phrase) == want[rel], phrase
            assert S.normalize_relation(want[rel]) == want[rel]
        else:
            with pytest.raises(ValueError, match="VISOR scores left of, right of, above and below"):
                S.normalize_relation(phrase)
    for word in ("leftmost", "cleft", "overcast", "bottom", "top"):  # words that contain a relation word
        with pytest.raises(ValueError, match="unknown relation"):
            S.normalize_relation(word)
    monkeypatch.setitem(REL.PHRASES, "to the west of", "left_of")  # one table: a new phrase reaches VISOR
    assert S.normalize_relation("to the west of") == "left"
    assert S.relation_holds("to the west of", (0, 0, 10, 10), (20, 0, 30, 10))


def test_visor_numbers_by_hand():
    # prompt p1: 4 images, both detected in 3, correct in 2; p2: both in 4, correct in 4; p3: nothing detected
    res = ([{"prompt": "p1", "both": b, "correct": c} for b, c in [(1, 1), (1, 1), (1, 0), (0, 0)]]
           + [{"prompt": "p2", "both": 1, "correct": 1}] * 4
           + [{"prompt": "p3", "both": 0, "correct": 0}] * 4)
    m = S.visor_metrics(res)
    assert m["images"] == 12 and m["prompts"] == 3
    assert m["OA"] == pytest.approx(100 * 7 / 12)
    assert m["VISOR_cond"] == pytest.approx(100 * 6 / 7)
    assert m["VISOR_uncond"] == pytest.approx(100 * 6 / 12)
    assert m["VISOR_uncond"] == pytest.approx(m["VISOR_cond"] * m["OA"] / 100)
    assert [m[f"VISOR_{k}"] for k in (1, 2, 3, 4)] == pytest.approx([200 / 3, 200 / 3, 100 / 3, 100 / 3])


def test_visor_evaluate_with_a_detector_hook():
    # a fake detector that reads the answer from the image: red pixel column = cat position, blue = dog
    def detect(im):
        a = np.asarray(im)
        out = []
        for lbl, ch in (("cat", 0), ("dog", 2)):
            xs = np.nonzero(a[0, :, ch] > 128)[0]
            if len(xs):
                out.append((lbl, (xs[0], 0, xs[0] + 1, 1), 0.9))
        return out

    def img(cat_x, dog_x):
        a = np.zeros((4, 10, 3), np.uint8)
        if cat_x is not None:
            a[0, cat_x, 0] = 255
        if dog_x is not None:
            a[0, dog_x, 2] = 255
        return Image.fromarray(a)
    items = [{"prompt": "k", "image": img(1, 8), "objects": ["cat", "dog"], "relation": "to the left of"},
             {"prompt": "k", "image": img(8, 1), "objects": ["cat", "dog"], "relation": "to the left of"},
             {"prompt": "k", "image": img(None, 1), "objects": ["cat", "dog"], "relation": "to the left of"}]
    res = S.visor_evaluate(detect, items)
    assert [(r["both"], r["correct"]) for r in res] == [(True, True), (True, False), (False, False)]
    m = S.visor_metrics(res, n_max=3)
    assert m["OA"] == pytest.approx(200 / 3) and m["VISOR_cond"] == pytest.approx(50) and m["VISOR_1"] == 100 and m["VISOR_2"] == 0


def test_owlvit_hook_from_a_local_folder(tmp_path):
    import torch
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor
    cfg = OwlViTConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2), projection_dim=32)
    torch.manual_seed(0)
    OwlViTForObjectDetection(cfg).save_pretrained(str(tmp_path))
    OwlViTProcessor(image_processor=OwlViTImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}),
                    tokenizer=_tokenizer(16)).save_pretrained(str(tmp_path))
    detect = S.owlvit_detector(str(tmp_path), ["cat", "dog", "teddy bear"], threshold=0.0)
    dets = detect(images(1, (64, 48))[0])
    assert len(dets) == 16  # one box per 8x8 patch of the 32x32 input
    for lbl, box, score in dets:
        assert lbl in ("cat", "dog", "teddy bear") and len(box) == 4 and 0 <= score <= 1
        assert box[0] <= box[2] and box[1] <= box[3]
    assert S.visor_check(dets, "cat", "dog", "above", threshold=0.0)["n_a"] == sum(d[0] == "cat" for d in dets)


# ---- reports on a runner folder --------------------------------------------------------------------------

def fake_results(tmp_path):
    """A folder as the runner leaves it (manifest, prompts.json, images), written without a server."""
    out = tmp_path / "results"
    recs = P.attend_and_excite_prompts(0)[64:68] + P.visor_prompts(2, 0)  # 2 animal_animal, 2 animal_object, 2 visor
    slugs = R.assign_slugs(recs)
    out.mkdir()
    m = R.Manifest(str(out / R.MANIFEST))
    with open(out / R.PROMPTS_INDEX, "w") as f:
        json.dump([dict(r, slug=s) for r, s in zip(recs, slugs)], f)
    ims = iter(images(len(recs) * 4))
    for r, s in zip(recs, slugs):
        (out / s).mkdir()
        for method in ("sd", "guided"):
            for seed in (0, 1):
                rel = f"{s}/{method}_{seed}.png"
                next(ims).save(out / rel)
                m.write({"event": "done", "key": f"{s}/{method}_{seed}", "slug": s, "prompt": r["prompt"], "id": r["id"],
                         "method": method, "seed": seed, "files": [rel]})
    return str(out), recs


def test_score_folder_end_to_end(tiny_clip, tmp_path):
    out, recs = fake_results(tmp_path)

    def detect(im):  # everything detected, cat/person left of everything else
        return [(o, (0, 0, 5, 5), 0.9) for o in ("person",)] + [(o, (10, 0, 15, 5), 0.9) for r in recs for o in r["objects"] if o != "person"]
    res = S.score_folder(out, clip=tiny_clip, templates=True, syngen=True, detect=detect, log=lambda *_: None)
    assert res["rows"] == 24
    rows = list(csv.DictReader(open(os.path.join(out, "scores.csv"))))
    assert len(rows) == 24 and all(-1 <= float(r["clip_full"]) <= 1 for r in rows)
    assert all(abs(float(r["clip_min_part"]) - min(json.loads(r["clip_parts"]))) < 1e-7 for r in rows)
    # SynGen: animal-animal prompts are dropped; the others make 4 (prompt, seed) groups for 2 methods
    assert sum(res["wins"].values()) == 4 * 2 and set(res["wins"]) == {"sd", "guided"}
    assert all(r["syngen_score"] == "" for r in rows if r["kind"] == "animal_animal")
    assert sum(int(r["syngen_win"]) for r in rows if r["syngen_win"]) == 8
    summ = {r["method"]: r for r in csv.DictReader(open(os.path.join(out, "summary.csv")))}
    assert set(summ) == {"sd", "guided"} and int(summ["sd"]["syngen_wins"]) + int(summ["guided"]["syngen_wins"]) == 8
    assert float(summ["sd"]["OA"]) == pytest.approx(100.0)
    page = open(res["html"], encoding="utf-8").read()
    links = re.findall(r"<img[^>]* src='([^']+)'", page)
    assert len(links) == 24 and all(not os.path.isabs(x) and os.path.isfile(os.path.join(out, x)) for x in links)
    assert page.count("<svg") == 6  # CLIP x2, SynGen wins, OA, VISOR_uncond, VISOR_cond
    # the page may live elsewhere: links stay relative to it
    other = tmp_path / "pages" / "sheet.html"
    other.parent.mkdir()
    S.score_folder(out, clip=tiny_clip, html_path=str(other), log=lambda *_: None)
    links = re.findall(r"<img[^>]* src='([^']+)'", other.read_text())
    assert links and all(x.startswith("../results/") and os.path.isfile(other.parent / x) for x in links)


def test_scores_cli(tiny_clip, tmp_path):
    out, _ = fake_results(tmp_path)
    assert S.main([out, "--clip", tiny_clip]) == 0
    assert os.path.isfile(os.path.join(out, "index.html")) and os.path.isfile(os.path.join(out, "summary.csv"))
    with pytest.raises(SystemExit):
        S.main([out])


def test_svg_chart_is_well_formed():
    import xml.etree.ElementTree as ET
    svg = S.svg_bar_chart({"sd": 0.25, "guided": 0.31, "neg": -0.1, "nan": float("nan")}, "CLIP <full>")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg") and len([e for e in root if e.tag.endswith("rect")]) == 3
