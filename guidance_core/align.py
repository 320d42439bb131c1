"""Words -> CLIP token positions.

The host's tokenizer turns a prompt into chunks of 77 token ids (sot, up to 75 prompt tokens, eot, padding);
ComfyUI concatenates the chunks' embeddings along the token axis, so chunk ``k`` occupies context positions
``77*k .. 77*k+76``. This module works on the flat list of *pieces* (BPE strings such as ``"sunflower</w>"``,
or ``None`` for special tokens and embedding vectors) at those context positions, and finds where a word's
own pieces stand in it. Pure Python: the nodes layer builds the piece list with the host's tokenizer.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence

END_OF_WORD = "</w>"

# ComfyUI prompt syntax: "(word:1.2)", "(word)", "[word]", "\(" escapes, "embedding:name".
_WEIGHT_RE = re.compile(r":\s*-?\d+(?:\.\d*)?\s*(?=\))")


def strip_weight_syntax(text: str) -> str:
    """Return the plain words of a ComfyUI prompt: ``"a (red:1.3) car"`` -> ``"a red car"``.

    Escaped brackets (``\\(``) are kept as literal brackets, weight numbers and unescaped brackets are removed,
    so a parser sees the words CLIP sees.
    """
    out = []
    i = 0
    text = _WEIGHT_RE.sub("", text)
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in "()[]":
            out.append(text[i + 1])
            i += 2
            continue
        if c in "()[]":
            out.append(" ")
        else:
            out.append(c)
        i += 1
    return re.sub(r"[ \t]+", " ", "".join(out)).strip()


def clean_piece(piece: str | None) -> str | None:
    """A BPE piece without its end-of-word marker, lower-cased (``"Car</w>"`` -> ``"car"``)."""
    if piece is None:
        return None
    if piece.endswith(END_OF_WORD):
        piece = piece[: -len(END_OF_WORD)]
    return piece.lower()


def find_sequence(pieces: Sequence[str | None], needle: Sequence[str], start: int = 0,
                  skip: Iterable[int] = ()) -> list[int] | None:
    """Positions of the first occurrence of ``needle`` (raw pieces) in ``pieces`` at or after ``start``.

    Positions in ``skip`` cannot begin a match (used to give repeated words distinct positions).
    Returns ``None`` when absent.
    """
    n = len(needle)
    if n == 0:
        return None
    skip = set(skip)
    for i in range(start, len(pieces) - n + 1):
        if i in skip:
            continue
        if all(pieces[i + j] == needle[j] for j in range(n)):
            return list(range(i, i + n))
    return None


def locate_words(pieces: Sequence[str | None], words: Sequence[str],
                 tokenize_word: Callable[[str], list[str]]) -> list[list[int] | None]:
    """Context positions of each word, in order.

    ``tokenize_word(word)`` returns the word's raw pieces without sot/eot (the host tokenizer on the word alone).
    A word that occurs several times is given a new occurrence each time it is asked for again, so
    ``["red", "red"]`` finds both reds of "a red red bear". A word whose pieces are not in the prompt gives ``None``.
    Punctuation glued to a word is its own piece in CLIP's BPE ("car," -> "car</w>", ",</w>"), so the word is found.
    """
    used: set[int] = set()
    out: list[list[int] | None] = []
    for word in words:
        wp = tokenize_word(word)
        pos = find_sequence(pieces, wp, skip=used)
        if pos is not None:
            used.add(pos[0])
        out.append(pos)
    return out


def describe_tokens(pieces: Sequence[str | None], limit: int = 80) -> str:
    """A readable token table ``"1:a 2:red 3:car"`` of the non-special pieces, for error messages."""
    items = [f"{i}:{clean_piece(p)}" for i, p in enumerate(pieces) if p is not None]
    text = " ".join(items[:limit])
    return text + (" ..." if len(items) > limit else "")
