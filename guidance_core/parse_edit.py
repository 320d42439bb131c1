"""Edited parses for Parse Prompt Bindings: the node's ``edited_json`` input, validated against the prompt.

The JSON is the node's own 'json' output (or a hand-written subset of it):
``{"entities": [{"noun": "car", "modifiers": ["red"], "number": 1}], "relations": [{"subject": "car",
"relation": "left_of", "object": "dog"}]}``. Words are indices into the prompt's words or their text (a repeated
word's k-th mention takes its k-th occurrence); relations name entities by index or noun text. Every problem is
a ValueError that names the input (edited_json), says what is wrong and how to fix it. Sizes are bounded: at
most MAX_CHARS characters (a parse of the longest prompt is far smaller) and no JSON nesting deeper than
Python's parser allows (which would otherwise raise RecursionError).
"""
from __future__ import annotations

import json

from .align import strip_weight_syntax
from .parse import Entity, Relation, parse_prompt
from .relations import RELATIONS, canonical_relation

MAX_CHARS = 1_000_000


def bindings_from_json(cls, text: str, prompt: str | None = None):
    """``cls`` (Bindings) from the edited JSON ``text``, checked against ``prompt`` (or the JSON's own
    "prompt"). Raises ValueError saying what is wrong and how to fix it."""
    if len(text) > MAX_CHARS:
        raise ValueError(f"edited_json is {len(text)} characters long, more than the {MAX_CHARS} a parse can need; "
                         "paste the node's 'json' output for this prompt, or clear the field")
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError("edited_json is nested too deeply to be a parse (lists or objects inside each other "
                         "thousands of levels deep); paste the node's 'json' output and edit it, or clear the "
                         "field") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"edited_json is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                         "copy the node's 'json' output and edit it, or clear the field") from None
    if not isinstance(data, dict) or not isinstance(data.get("entities", []), list):
        raise ValueError('edited_json must be an object like {"entities": [{"noun": "car", "modifiers": ["red"]}]}')
    prompt = prompt if prompt is not None else data.get("prompt", "")
    if not str(prompt).strip():
        raise ValueError("edited_json: no prompt to check the words against")
    words = parse_prompt(prompt).words  # the same words (and indices) as the node's own parse
    if isinstance(data.get("words"), list) and [str(w) for w in data["words"]] != [w.text for w in words]:
        raise ValueError("edited_json was made for another prompt: its 'words' differ from this prompt's words "
                         f"{[w.text for w in words]}; parse this prompt again and edit that JSON")
    used: dict[str, int] = {}

    def index(ref, what):
        if isinstance(ref, bool) or not isinstance(ref, (int, str)):
            raise ValueError(f"edited_json: {what} must be a word of the prompt or its index, not {ref!r}")
        if isinstance(ref, int):
            if not 0 <= ref < len(words):
                raise ValueError(f"edited_json: {what} index {ref} is out of range: the prompt has "
                                 f"{len(words)} words (0..{len(words) - 1}): {[w.text for w in words]}")
            return ref
        matches = [i for i, w in enumerate(words) if w.text.lower() == ref.strip().lower()]
        if not matches:
            raise ValueError(f"edited_json: {what} '{ref}' is not a word of the prompt '{prompt}'")
        k = used.get(ref.lower(), 0)
        used[ref.lower()] = k + 1
        return matches[min(k, len(matches) - 1)]

    entities = []
    for n, e in enumerate(data.get("entities", [])):
        if not isinstance(e, dict) or "noun" not in e:
            raise ValueError(f"edited_json: entity {n} needs a 'noun'")
        mods = e.get("modifiers", [])
        if not isinstance(mods, list):
            raise ValueError(f"edited_json: entity {n}: 'modifiers' must be a list")
        num = e.get("number")
        if num is not None and (not isinstance(num, int) or isinstance(num, bool) or num < 0):
            raise ValueError(f"edited_json: entity {n}: 'number' must be a whole number or null")
        entities.append(Entity(index(e["noun"], f"entity {n} noun"),
                               [index(m, f"entity {n} modifier") for m in mods], num))
    rels = data.get("relations")
    if rels is not None and not isinstance(rels, list):
        raise ValueError("edited_json: 'relations' must be a list like [{\"subject\": \"car\", \"relation\": "
                         f"\"left_of\", \"object\": \"dog\"}}], not {type(rels).__name__} {json.dumps(rels)[:40]}")
    relations = []
    for n, r in enumerate(rels or []):
        if not isinstance(r, dict) or not {"subject", "relation", "object"} <= set(r):
            raise ValueError(f"edited_json: relation {n} needs 'subject', 'relation' and 'object'")
        try:
            rel = canonical_relation(r["relation"])
        except ValueError:
            raise ValueError(f"edited_json: relation {n}: unknown relation '{r['relation']}'; use one of "
                             + ", ".join(RELATIONS)) from None
        s, o = (_entity_ref(r[k], entities, words, f"relation {n} {k}") for k in ("subject", "object"))
        if s == o:
            raise ValueError(f"edited_json: relation {n} has the same object on both sides")
        relations.append(Relation(s, rel, o))
    return cls(prompt=strip_weight_syntax(prompt), words=words, entities=entities, relations=relations,
               parser="edited")


def _entity_ref(ref, entities, words, what):
    if isinstance(ref, int) and not isinstance(ref, bool):
        if not 0 <= ref < len(entities):
            raise ValueError(f"edited_json: {what} entity index {ref} is out of range ({len(entities)} entities)")
        return ref
    for i, e in enumerate(entities):
        if words[e.noun].text.lower() == str(ref).strip().lower():
            return i
    raise ValueError(f"edited_json: {what} '{ref}' is not the noun of any entity")
