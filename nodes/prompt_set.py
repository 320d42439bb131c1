"""Prompt From Set: one prompt of an evaluation prompt set (Attend-and-Excite, DVMP, VISOR) by index."""
from __future__ import annotations

from comfy_api.latest import io

from ..faithful_eval.prompts import DEFAULT_SIZES, SETS, pick


class PromptFromSet(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulPromptFromSet",
            display_name="Prompt From Set",
            category="faithful/evaluation",
            description=(
                "Picks one prompt from a benchmark prompt set used to evaluate prompt faithfulness: the 276 "
                "Attend-and-Excite prompts (two subjects, optional colours), SynGen's DVMP prompts (1-3 subjects "
                "with modifiers) or the VISOR spatial prompts ('a cat to the left of a dog', 80 COCO classes). "
                "Outputs the prompt and its subject words, ready for CLIPTextEncode and the Faithful guidance "
                "nodes. Sets are generated from their published grammars; the seed fixes the random choices, so "
                "the same index and seed always give the same prompt. Set 'index' to increment after each run to "
                "walk through a set."),
            inputs=[
                io.Combo.Input("prompt_set", options=list(SETS), default="attend_and_excite",
                               tooltip="Which set: 'attend_and_excite' (276 prompts: animal-animal, animal-object, "
                                       "object-object), 'dvmp' (SynGen's modifier prompts) or 'visor' (spatial "
                                       "relations between two COCO objects, 25,280 prompts)."),
                io.Int.Input("index", default=0, min=0, max=1_000_000, step=1,
                             tooltip="Position of the prompt in the set, from 0. It wraps around the set size "
                                     "(see the 'count' output), so incrementing it forever cycles through the set."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, step=1,
                             tooltip="Seed of the set's random choices: the DVMP prompts themselves, the colours of the "
                                     "Attend-and-Excite prompts, and which VISOR prompts a sample contains. It is "
                                     "not the image seed."),
                io.Int.Input("set_size", default=0, min=0, max=100_000, step=1, optional=True,
                             tooltip="How many prompts the set has. 0 = the set's usual size (DVMP 200, "
                                     f"Attend-and-Excite {DEFAULT_SIZES['attend_and_excite']}, VISOR all "
                                     f"{DEFAULT_SIZES['visor']:,}). For DVMP it is the number generated, for VISOR "
                                     "a seeded sample of that many, for Attend-and-Excite the first N."),
            ],
            outputs=[
                io.String.Output("prompt", display_name="prompt",
                                 tooltip="The prompt text, e.g. 'a cat and a red chair'. Connect it to the text of "
                                         "CLIPTextEncode and to the prompt of the Faithful guidance node."),
                io.String.Output("subjects", display_name="subjects",
                                 tooltip="The subject nouns of the prompt, comma-separated ('cat, chair'), for the "
                                         "'subjects' input of Excite Tokens."),
                io.String.Output("relation", display_name="relation",
                                 tooltip="The spatial relation of a VISOR prompt ('to the left of', 'to the right of', "
                                         "'above', 'below'); empty for the other sets."),
                io.String.Output("prompt_id", display_name="prompt_id",
                                 tooltip="A stable id of the prompt inside its set (e.g. 'ae_012', 'visor_01234'), "
                                         "handy in a SaveImage filename prefix."),
                io.Int.Output("count", display_name="count",
                              tooltip="How many prompts the chosen set has with these settings (where 'index' wraps)."),
            ],
        )

    @classmethod
    def execute(cls, prompt_set, index, seed, set_size=0) -> io.NodeOutput:
        rec, count = pick(prompt_set, index, seed, set_size)
        return io.NodeOutput(rec["prompt"], ", ".join(rec.get("objects", [])), rec.get("relation", ""),
                             rec["id"], count)


NODES = [PromptFromSet]
