"""Parse Prompt Bindings and Bind Attributes: SynGen (Rassin et al., NeurIPS 2023) for the stock samplers."""
from __future__ import annotations

import logging

from comfy_api.latest import io, ui

from ..guidance_core.syngen import Subtree, SynGenTerm
from .runtime import install
from .tokens import PromptCheck, PromptTokens

log = logging.getLogger("faithful")
Bindings = io.Custom("FAITHFUL_BINDINGS")


def _parse_module():
    from ..guidance_core import parse
    return parse


def resolve(clip, prompt: str, edited_json: str = "") -> dict:
    """Parse (or take the edited JSON), then attach every word's CLIP positions. Returns the BINDINGS value."""
    parse = _parse_module()
    if not (prompt or "").strip():
        raise ValueError("Parse Prompt Bindings: the prompt is empty")
    b = parse.Bindings.from_json(edited_json, prompt=prompt) if (edited_json or "").strip() else parse.parse_prompt(prompt)
    toks = PromptTokens(clip, prompt)
    positions = parse.token_positions(b, toks.pieces, toks.tokenize_word)
    words = [{"text": w.text, "positions": positions.get(i, [])} for i, w in enumerate(b.words)]
    entities = []
    for e in b.entities:
        entities.append({"noun": e.noun, "modifiers": list(e.modifiers), "number": e.number})
    relations = []
    for r in b.relations:
        sp, op = positions.get(b.entities[r.subject].noun, []), positions.get(b.entities[r.object].noun, [])
        relations.append({"subject": r.subject, "relation": r.relation, "object": r.object,
                          "subject_positions": sp, "object_positions": op})
    return {"prompt": prompt, "n_tokens": toks.n_tokens, "words": words, "entities": entities,
            "relations": relations, "prompt_positions": toks.prompt_positions(), "json": b.to_json(),
            "description": b.describe(), "warnings": list(getattr(b, "warnings", [])), "parser": b.parser,
            "check": toks.check("Bind Attributes (via Parse Prompt Bindings)", clip)}


def shown_text(bindings: dict) -> str:
    """What the node shows after a run: the parse, the parser that made it, then one line per warning."""
    parser = {"rules": "rule-based fallback (no spaCy model)", "edited": "edited_json"}.get(
        bindings.get("parser", ""), bindings.get("parser", ""))
    lines = [bindings["description"], f"parser: {parser}"] if parser else [bindings["description"]]
    return "\n".join(lines + ["warning: " + w for w in bindings["warnings"]])



def subtrees_of(bindings: dict) -> list[Subtree]:
    words = bindings["words"]
    out = []
    for e in bindings["entities"]:
        noun = words[e["noun"]]["positions"]
        mods = [words[m]["positions"] for m in e["modifiers"] if words[m]["positions"]]
        if noun:
            out.append(Subtree(noun=noun, modifiers=mods))
    return out


class ParsePromptBindings(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulParsePromptBindings",
            display_name="Parse Prompt Bindings",
            category="faithful",
            description=(
                "Reads the prompt with an English parser and finds each object (noun) with its attributes "
                "('a pink sunflower and a yellow flamingo': pink -> sunflower, yellow -> flamingo), numbers, and the "
                "spatial relations it states ('X to the left of Y'). Shows what was bound, and outputs it for Bind "
                "Attributes and Spatial Alignment Loss. Paste an edited JSON into 'edited_json' to override the parse."),
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP of your CLIPTextEncode, to map words to token positions."),
                io.String.Input("prompt", multiline=True, default="a pink sunflower and a yellow flamingo",
                                tooltip="The positive prompt, exactly as in the CLIPTextEncode that feeds the sampler."),
                io.String.Input("edited_json", multiline=True, default="", optional=True,
                                tooltip="Optional: a corrected parse (copy the 'json' output, edit, paste here). Words may "
                                        "be given by text, e.g. {\"entities\": [{\"noun\": \"sunflower\", \"modifiers\": [\"pink\"]}]}."),
            ],
            outputs=[
                Bindings.Output("bindings", display_name="bindings",
                                tooltip="Objects, their attributes, numbers and relations, with token positions."),
                io.String.Output("json", display_name="parse json",
                                 tooltip="The parse as editable JSON: copy it, correct it, paste it into 'edited_json'."),
                io.String.Output("description", display_name="summary",
                                 tooltip="A one-line readable summary, e.g. 'sunflower <- pink | flamingo <- yellow' "
                                         "(the same text the node shows after a run)."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, clip, prompt, edited_json="") -> io.NodeOutput:
        b = resolve(clip, prompt, edited_json)
        return io.NodeOutput(b, b["json"], b["description"], ui=ui.PreviewText(shown_text(b)))


class BindAttributes(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulBindAttributes",
            display_name="Bind Attributes (SynGen)",
            category="faithful",
            description=(
                "Keeps each attribute on its own object: 'a pink sunflower and a yellow flamingo' must not give a "
                "yellow sunflower. During the first half of sampling it pulls each attribute's attention map onto its "
                "noun's map and pushes both away from the rest of the prompt (SynGen, Rassin et al. 2023). Connect "
                "Parse Prompt Bindings for the same prompt as the sampler's positive input."),
            inputs=[
                io.Model.Input("model", tooltip="The model to guide (SD1.x, SD2.x or SDXL); it is cloned."),
                Bindings.Input("bindings", tooltip="From Parse Prompt Bindings, for the sampler's positive prompt."),
                io.Float.Input("step_size", default=20.0, min=0.0, max=200.0, step=0.5, optional=True,
                               tooltip="Latent step size (the paper's 20, constant over the guided steps)."),
                io.Float.Input("guided_fraction", default=0.5, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="Fraction of the steps that are guided (the paper: 25 of 50)."),
                io.Boolean.Input("include_entities", default=False, optional=True,
                                 tooltip="Also push nouns without attributes away from the other words (off in the paper)."),
                io.Int.Input("attention_factor", default=4, min=1, max=64, optional=True,
                             tooltip="Which maps are read: latent size / map size (4 = 16x16 at 512 px, as the paper)."),
            ],
            hidden=[io.Hidden.unique_id],
            outputs=[io.Model.Output(tooltip="The model with SynGen binding; chain more Faithful nodes or connect to a sampler.")],
        )

    @classmethod
    def execute(cls, model, bindings, step_size=20.0, guided_fraction=0.5, include_entities=False,
                attention_factor=4) -> io.NodeOutput:
        if not isinstance(bindings, dict) or "entities" not in bindings:
            raise ValueError("Bind Attributes: 'bindings' must come from Parse Prompt Bindings")
        subs = subtrees_of(bindings)
        if not include_entities:
            subs = [s for s in subs if s.modifiers]
        if not subs:
            raise ValueError("Bind Attributes: the prompt has no noun with an attribute to bind "
                             f"({bindings.get('description') or 'no nouns found'}). Add attributes such as "
                             "'a red car', edit the parse, or remove this node.")
        term = SynGenTerm(subs, bindings["prompt_positions"], step_size, guided_fraction, attention_factor,
                          include_entities)
        term.expected_tokens = bindings["n_tokens"]
        m, reg = install(model)
        reg.terms.append(term)
        reg.owners[term] = cls.hidden.unique_id if cls.hidden is not None else None
        chk = bindings.get("check")
        reg.prompts.append(chk if isinstance(chk, PromptCheck) else
                           PromptCheck("Bind Attributes", bindings.get("prompt", ""), bindings["n_tokens"]))
        return io.NodeOutput(m)


NODES = [ParsePromptBindings, BindAttributes]
