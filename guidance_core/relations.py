"""The one vocabulary of spatial relations: the phrases a prompt or a relation line may use, and their names.

Every part of the pack reads relations from here: the prompt parser (``parse.py``: which words form a
relation phrase between two objects), Spatial Alignment Loss (InfSplign, arXiv 2512.17851: which side of a
relation line is which object, and the relation's axis) and the VISOR scorer of ``faithful_eval`` (Gokhale et
al. 2022: left of / right of / above / below between detected boxes).

A relation is one of ``RELATIONS``; ``PHRASES`` maps each phrase (lower case, words separated by one space)
to its relation; ``ALIASES`` adds the relation names themselves ("left_of"), as a relation line may be
written "car left_of dog". Standard library only.
"""
from __future__ import annotations

RELATIONS = ("left_of", "right_of", "above", "below", "next_to")

PHRASES = {
    "to the left of": "left_of", "on the left of": "left_of", "left of": "left_of",
    "to the right of": "right_of", "on the right of": "right_of", "right of": "right_of",
    "on top of": "above", "on the top of": "above", "above": "above", "over": "above",
    "below": "below", "under": "below", "beneath": "below", "underneath": "below", "on the bottom of": "below",
    "next to": "next_to", "near": "next_to", "beside": "next_to", "on side of": "next_to",
}

ALIASES = {**PHRASES, **{r: r for r in RELATIONS}}


def _key(text: str) -> str:
    """Lower case, hyphens and underscores as spaces, runs of white space as one: 'Left-of' -> 'left of'."""
    return " ".join(str(text).lower().replace("-", " ").replace("_", " ").split())


def canonical_relation(text: str) -> str:
    """A phrase or a relation name, in any case and spacing ("To the left of", "left-of", "left_of") ->
    its relation ("left_of"); anything else raises ValueError listing the known phrases."""
    key = _key(text)
    if key in PHRASES:
        return PHRASES[key]
    if key.replace(" ", "_") in RELATIONS:
        return key.replace(" ", "_")
    raise ValueError(f"unknown relation '{text}'; use one of: " + ", ".join(sorted(PHRASES)))


def phrases_longest_first(with_names: bool = False) -> list[str]:
    """The phrases (and with ``with_names`` the relation names too), longest first: the order in which to
    look for them in a text so that "to the left of" wins over "left of"."""
    return sorted(ALIASES if with_names else PHRASES, key=lambda p: (-len(p), p))
