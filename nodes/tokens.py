"""The host tokenizer's view of a prompt: one BPE piece per context position, for word alignment."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..guidance_core.align import describe_tokens, locate_words


def sd_tokenizers(clip):
    """The SDTokenizer objects inside a CLIP (SD1: clip_l; SD2: clip_h; SDXL: clip_l and clip_g)."""
    tok = clip.tokenizer
    found = []
    for name, val in vars(tok).items():
        if hasattr(val, "inv_vocab") and hasattr(val, "tokenize_with_weights"):
            found.append((name, val))
    if not found and hasattr(tok, "inv_vocab"):
        found.append(("clip", tok))
    if not found:
        raise ValueError("Faithful could not find a CLIP BPE tokenizer in this CLIP model; it supports SD1.x, SD2.x and SDXL")
    found.sort(key=lambda kv: (kv[0] != "clip_l", kv[0]))
    return found


class PromptTokens:
    """Pieces at context positions for ``text`` as CLIPTextEncode tokenizes it (weights syntax, chunks).

    ``pieces[p]`` is the raw BPE string at context position p, or None for sot/eot/padding and embeddings.
    ``n_tokens`` is the context length (77 per chunk).
    """

    def __init__(self, clip, text: str):
        name, sdtok = sd_tokenizers(clip)[0]
        self.sdtok = sdtok
        key = name.replace("clip_", "")
        tokens = clip.tokenize(text)
        chunks = tokens[key] if isinstance(tokens, dict) and key in tokens else next(iter(tokens.values()))
        special = {getattr(sdtok, a, None) for a in ("start_token", "end_token", "pad_token")}
        special.discard(None)
        self.pieces: list[str | None] = []
        for chunk in chunks:
            for item in chunk:
                t = item[0]
                if isinstance(t, int) and t not in special:
                    self.pieces.append(sdtok.inv_vocab.get(t))
                else:
                    self.pieces.append(None)
        self.n_tokens = len(self.pieces)
        self.text = text

    def tokenize_word(self, word: str) -> list[str]:
        ids = self.sdtok.tokenizer(word)["input_ids"]
        start = getattr(self.sdtok, "tokens_start", 1)
        end = -1 if getattr(self.sdtok, "tokenizer_adds_end_token", True) else None
        return [self.sdtok.inv_vocab[i] for i in ids[start:end]]

    def locate(self, words: list[str]) -> list[list[int] | None]:
        return locate_words(self.pieces, words, self.tokenize_word)

    def prompt_positions(self) -> list[int]:
        return [i for i, p in enumerate(self.pieces) if p is not None]

    def describe(self) -> str:
        return describe_tokens(self.pieces)

    def require(self, words: list[str], node: str, what: str) -> list[list[int]]:
        """Each word's context positions; a word that is not in the prompt is a ValueError naming ``node`` and
        ``what`` it is (subject, object, phrase, word), with the prompt's tokens."""
        out = []
        for w, pos in zip(words, self.locate(words)):
            if pos is None:
                raise ValueError(f"{node}: {what} '{w}' is not in the prompt '{self.text}'. Use words exactly as "
                                 f"they appear in the prompt. Prompt tokens: {self.describe()}")
            out.append(pos)
        return out

    def check(self, node: str, clip) -> "PromptCheck":
        """What the run will match against the sampler's positive conditioning (see PromptCheck)."""
        return PromptCheck(node, self.text, self.n_tokens, chunk_signature(clip, self.text))


def chunk_signature(clip, text: str) -> torch.Tensor | None:
    """``text`` encoded by ``clip`` at the last position of each 77-token chunk: (n_chunks, C) float32 on the
    CPU; None when this CLIP cannot encode (a tokenizer-only stand-in)."""
    enc = getattr(clip, "encode_from_tokens", None)
    if enc is None:
        return None
    try:
        cond = enc(clip.tokenize(text))
    except NotImplementedError:
        return None
    if not isinstance(cond, torch.Tensor) or cond.dim() != 3:
        return None
    return cond[0, 76::77].detach().float().cpu().clone()


@dataclass
class PromptCheck:
    """A node's prompt as it will be matched against the sampler's positive conditioning.

    ``signature`` (n_chunks, C): the node's own encoding of its prompt at the last position of every 77-token
    chunk (the end/padding token, which CLIP's causal attention makes depend on every token of its chunk), or None
    when the CLIP cannot encode (then only the token count is compared). Layout Regions' spliced conditioning
    only replaces phrase positions, never a chunk's last position, so it still matches its own prompt.
    """
    node: str
    text: str
    n_tokens: int
    signature: torch.Tensor | None = None

    TOLERANCE = 2e-2  # relative L2 distance; re-encoding the same prompt gives ~1e-7, another prompt ~0.1-1

    def matches(self, context: torch.Tensor) -> bool:
        """``context`` (B, T, C): one positive conditioning's cross-attention context."""
        if context.dim() != 3 or context.shape[1] != self.n_tokens:
            return False
        if self.signature is None:
            return True
        last = context[0, 76::77].detach().float().cpu()
        sig = self.signature.float()
        if last.shape != sig.shape:
            return False
        return bool(((last - sig).norm(dim=-1) <= self.TOLERANCE * sig.norm(dim=-1).clamp(min=1e-6)).all())




def parse_word_list(text: str) -> list[str]:
    """``"cat, frog ; teddy bear"`` -> ["cat", "frog", "teddy bear"] (commas, semicolons or new lines)."""
    import re
    return [w.strip() for w in re.split(r"[,;\n]", text or "") if w.strip()]


def parse_index_list(text: str) -> list[list[int]]:
    """``"2, 5+6"`` -> [[2], [5, 6]]: raw context positions, ``+`` joins the pieces of one word."""
    groups = []
    for part in parse_word_list(text):
        try:
            groups.append([int(p) for p in part.split("+")])
        except ValueError:
            raise ValueError(f"token_indices: '{part}' is not a number; write positions like '2, 5' or '5+6' "
                             "for a word split into two pieces (sot is position 0)") from None
    return groups
