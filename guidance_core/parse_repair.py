"""Noun-phrase repair of a spaCy parse, for SynGen prompt parsing (Rassin et al., NeurIPS 2023, arXiv 2306.08877).

Prompts are noun phrases, but a small tagger trained on news text reads some of them as clauses: in
"a crimson rose and a white lily" en_core_web_sm tags "rose" VBD (past tense of "rise") with "crimson" as its
subject, so the attribute is bound to nothing. The remedy is not a word list. A word w is a *suspect* when it
heads a clause it cannot head in a noun phrase:

    w is a finite verb (tag VBD, VBZ or VBP) or a noun with an nsubj child, and
    w has a determiner child, or the word before w is a determiner, or the word before w is an adjective or
    noun that opens a phrase itself (it has a det/nummod child: "a crimson" + rose).

Every suspect is replaced by the neutral noun "thing" and the prompt is parsed again. A suspect is accepted as a
noun when, in that parse, the placeholder is a noun and the word before it is its determiner or a modifier of it
(amod/nmod, or an ADJ child): "a crimson thing" gives crimson -amod-> thing. Real clauses keep their verb:
"a dog sleeps on a sofa" -> "a dog thing" reads dog as a compound, so "sleeps" stays a verb. The accepted
parse is rebuilt as a Doc over the ORIGINAL words (same tokens, character offsets and whitespace) with the
second parse's heads, dependency labels, tags and POS, so the extractors never see the placeholder.
"""
from __future__ import annotations

PLACEHOLDER = "thing"
FINITE_VERB_TAGS = {"VBD", "VBZ", "VBP"}
NOUN_POS = {"NOUN", "PROPN"}


def _opens_phrase(tok) -> bool:
    return any(c.dep_ in ("det", "nummod") for c in tok.children)


def _suspect(tok) -> bool:
    clause_head = (tok.pos_ == "VERB" and tok.tag_ in FINITE_VERB_TAGS) or \
                  (tok.pos_ in NOUN_POS and any(c.dep_ == "nsubj" for c in tok.children))
    if not clause_head or tok.i == 0:
        return False
    prev = tok.doc[tok.i - 1]
    if any(c.dep_ == "det" for c in tok.children) or prev.pos_ == "DET":
        return True
    return prev.pos_ in ("ADJ", "NOUN", "PROPN") and _opens_phrase(prev) and bool(prev.whitespace_)


def _reads_as_noun(trial, i: int) -> bool:
    tok = trial[i]
    if tok.pos_ not in NOUN_POS or i == 0:
        return False
    prev = trial[i - 1]
    return prev.head.i == i and (prev.pos_ == "DET" or prev.dep_ in ("amod", "nmod") or prev.pos_ == "ADJ")


def _with_placeholders(nlp, doc, idx: list[int]):
    text = "".join((PLACEHOLDER + t.whitespace_) if t.i in idx else t.text_with_ws for t in doc)
    trial = nlp(text)
    if len(trial) != len(doc) or any(a.text != b.text for a, b in zip(doc, trial) if a.i not in idx):
        return None  # the placeholder changed the tokenisation: keep the first parse
    return trial


def _rebuild(doc, trial):
    from spacy.tokens import Doc
    return Doc(doc.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc],
               pos=[t.pos_ for t in trial], tags=[t.tag_ for t in trial], deps=[t.dep_ for t in trial],
               heads=[t.head.i for t in trial])


def noun_phrase_doc(nlp, text: str):
    """``nlp(text)``, with clause readings of noun phrases repaired (see the module docstring). Returns
    ``(doc, repaired_words)``: the Doc the extractors read and the texts of the words re-read as nouns."""
    doc = nlp(text)
    suspects = [t.i for t in doc if _suspect(t)]
    if not suspects:
        return doc, []
    tried = suspects
    for _ in range(3):  # parse again with only the accepted ones replaced, until every replaced one reads as a noun
        trial = _with_placeholders(nlp, doc, tried)
        if trial is None:
            return doc, []
        accepted = [i for i in tried if _reads_as_noun(trial, i)]
        if not accepted:
            return doc, []
        if accepted == tried:
            return _rebuild(doc, trial), [doc[i].text for i in accepted]
        tried = accepted
    return doc, []
