"""Spatial Alignment Loss: InfSplign (arXiv 2512.17851) as a MODEL patch for the stock samplers."""
from __future__ import annotations

from comfy_api.latest import io

from ..guidance_core.spatial_term import SpatialTerm, parse_relation_line
from .runtime import install, transformer_positions
from .tokens import PromptTokens

_ARTICLES = {"a", "an", "the"}


def _object_positions(toks: PromptTokens, phrase: str, where: str) -> list[int]:
    """Positions of an object phrase. Leading articles are dropped; a multi-word phrase is found as a whole,
    and its map is the mean over all its pieces (robust to multi-piece words, unlike the reference)."""
    words = [w for w in phrase.split() if w.lower() not in _ARTICLES]
    if not words:
        raise ValueError(f"Spatial Alignment Loss: the {where} object of a relation is empty")
    return toks.require([" ".join(words)], "Spatial Alignment Loss", "object")[0]


def relations_from_text(toks: PromptTokens, text: str):
    rels = []
    for line in [ln for ln in (text or "").replace(";", "\n").splitlines() if ln.strip()]:
        try:
            a, rel, b = parse_relation_line(line)
        except ValueError as e:
            raise ValueError(f"Spatial Alignment Loss: {e}") from None
        pa, pb = _object_positions(toks, a, "first"), _object_positions(toks, b, "second")
        if set(pa) & set(pb):
            raise ValueError(f"Spatial Alignment Loss: relation '{line.strip()}' has the same object on both sides")
        rels.append((pa, rel, pb))
    return rels


def relations_from_bindings(bindings) -> list:
    """(positions A, relation, positions B) from a Parse Prompt Bindings value (dict with 'relations')."""
    rels = bindings.get("relations", []) if isinstance(bindings, dict) else []
    if not isinstance(rels, list):
        raise ValueError("Spatial Alignment Loss: the bindings' 'relations' must be a list of relations; re-run "
                         "Parse Prompt Bindings or fix its edited_json")
    out = []
    for r in rels:
        try:
            sp, rel, op = r["subject_positions"], r["relation"], r["object_positions"]
        except (KeyError, TypeError):
            raise ValueError(f"Spatial Alignment Loss: the bindings' relation {str(r)[:80]!r} lacks its objects "
                             "(subject_positions, relation, object_positions); re-run Parse Prompt Bindings") from None
        if not sp or not op:
            raise ValueError(f"Spatial Alignment Loss: the bindings' relation '{rel}' is missing an object; "
                             "the prompt must name the objects on both sides, e.g. 'a car to the left of a dog'")
        out.append((sp, rel, op))
    return out


class SpatialAlignmentLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulSpatialAlignment",
            display_name="Spatial Alignment Loss (InfSplign)",
            category="faithful",
            description=(
                "Puts objects where the prompt says: 'a red car to the left of a blue dog'. At every step it measures "
                "where each object's decoder cross-attention sits (its centroid) and how compact and balanced the two "
                "objects are, and steers the noise estimate so the relation holds (InfSplign, 2025). Relations: left "
                "of, right of, above, below, next to / near / beside. Costs one extra forward and backward per step."),
            inputs=[
                io.Model.Input("model", tooltip="The model to guide (SD1.x, SD2.x or SDXL); it is cloned."),
                io.Clip.Input("clip", tooltip="The CLIP of your CLIPTextEncode, to find the object words in the prompt."),
                io.String.Input("prompt", multiline=True, default="a red car to the left of a blue dog",
                                tooltip="The positive prompt, exactly as in the CLIPTextEncode that feeds the sampler."),
                io.String.Input("relations", multiline=True, default="car left of dog",
                                tooltip="One relation per line: 'object A relation object B', e.g. 'car left of dog', "
                                        "'lamp above table', or 'A | next to | B'. Leave empty to use the relations of a "
                                        "connected Parse Prompt Bindings."),
                io.Float.Input("guidance_scale", default=1000.0, min=0.0, max=100000.0, step=10.0, optional=True,
                               tooltip="Weight of the loss gradient added to the noise estimate (the reference's 1000)."),
                io.Float.Input("alpha", default=1.5, min=0.0, max=20.0, step=0.05, optional=True,
                               tooltip="Sharpness of the GELU placement term (paper setting 1.5; code default 0.75)."),
                io.Float.Input("margin", default=0.25, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="How far apart the two centroids should be, as a fraction of the image (0.25)."),
                io.Float.Input("w_spatial", default=0.5, min=0.0, max=10.0, step=0.05, optional=True,
                               tooltip="Weight of the placement term (paper setting 0.5)."),
                io.Float.Input("w_presence", default=1.0, min=0.0, max=10.0, step=0.05, optional=True,
                               tooltip="Weight of the presence term: keeps each object's attention compact (16x16 layers)."),
                io.Float.Input("w_balance", default=1.0, min=0.0, max=10.0, step=0.05, optional=True,
                               tooltip="Weight of the balance term: keeps the two objects a similar size (32x32 layers)."),
                io.Float.Input("start", default=0.0, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="First guided step as a fraction of the steps (the paper guides every step)."),
                io.Float.Input("end", default=1.0, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="Guidance stops at this fraction of the steps."),
                io.Custom("FAITHFUL_BINDINGS").Input("bindings", optional=True,
                                                     tooltip="Optional: relations found by Parse Prompt Bindings, used when 'relations' is empty."),
            ],
            hidden=[io.Hidden.unique_id],
            outputs=[io.Model.Output(tooltip="The model with spatial guidance; chain more Faithful nodes or connect to a sampler.")],
        )

    @classmethod
    def execute(cls, model, clip, prompt, relations, guidance_scale=1000.0, alpha=1.5, margin=0.25, w_spatial=0.5,
                w_presence=1.0, w_balance=1.0, start=0.0, end=1.0, bindings=None) -> io.NodeOutput:
        if not (prompt or "").strip():
            raise ValueError("Spatial Alignment Loss: the prompt is empty; type the sampler's positive prompt")
        if end <= start:
            raise ValueError(f"Spatial Alignment Loss: end ({end}) must be after start ({start})")
        toks = PromptTokens(clip, prompt)
        rels = relations_from_text(toks, relations) if (relations or "").strip() else relations_from_bindings(bindings)
        if not rels:
            raise ValueError("Spatial Alignment Loss: no relation given; write one such as 'car left of dog', or "
                             "connect Parse Prompt Bindings for a prompt that states one")
        deep = any(kind == "output" and j >= 3 for kind, _, j in transformer_positions(model))
        term = SpatialTerm(rels, guidance_scale, alpha, margin, w_spatial, w_presence, w_balance, start, end,
                           deep_decoder=deep)
        term.expected_tokens = toks.n_tokens
        m, reg = install(model)
        reg.terms.append(term)
        reg.owners[term] = cls.hidden.unique_id if cls.hidden is not None else None
        reg.prompts.append(toks.check("Spatial Alignment Loss", clip))
        return io.NodeOutput(m)


NODES = [SpatialAlignmentLoss]
