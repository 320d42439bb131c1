"""The one relation vocabulary (guidance_core/relations.py) and the copies that must agree with it."""
from __future__ import annotations

import pytest

from guidance_core import relations as REL

# Host-independent (or, for the fresh-clone example run, checked once): run on the first test host only.
pytestmark = pytest.mark.once



def test_every_phrase_and_spelling_names_one_relation():
    assert set(REL.PHRASES.values()) == set(REL.RELATIONS)
    for phrase, rel in REL.PHRASES.items():
        assert phrase == " ".join(phrase.split()) and phrase == phrase.lower()
        assert REL.canonical_relation(phrase) == rel
        assert REL.canonical_relation(f"  {phrase.upper().replace(' ', '-')} ") == rel
    for rel in REL.RELATIONS:
        assert REL.canonical_relation(rel) == rel and REL.ALIASES[rel] == rel
        assert REL.canonical_relation(rel.replace("_", " ")) == rel
    assert REL.canonical_relation("To  the Left of") == "left_of"
    for bad in ("left", "leftmost", "to the left", "behind", ""):
        with pytest.raises(ValueError, match="unknown relation .* use one of: above, below, beneath"):
            REL.canonical_relation(bad)


def test_longest_phrases_come_first():
    order = REL.phrases_longest_first()
    assert set(order) == set(REL.PHRASES)
    assert order.index("to the left of") < order.index("left of")
    assert order.index("on the top of") < order.index("on top of")
    names = REL.phrases_longest_first(with_names=True)
    assert set(names) == set(REL.ALIASES) and "left_of" in names


def test_the_other_tables_are_the_same_vocabulary():
    """Until parse.py and spatial.py import the shared table, their copies must not drift from it."""
    from guidance_core import parse, spatial
    assert parse.RELATION_PHRASES == REL.PHRASES
    assert spatial.RELATION_ALIASES == REL.ALIASES
    assert spatial.RELATIONS == REL.RELATIONS
    for alias in REL.ALIASES:
        assert spatial.canonical_relation(alias) == REL.canonical_relation(alias)
