"""Faithful: inference-time attention guidance for ComfyUI (Attend-and-Excite, SynGen, InfSplign, DenseDiffusion).

One V3 entrypoint; every module in ``nodes/`` that defines ``NODES`` contributes its node classes.
"""
import importlib
import logging

WEB_DIRECTORY = "./web"

_NODE_MODULES = ["excite", "bindings", "spatial", "layout", "preview", "prompt_set", "shapes"]


def _collect_nodes():
    nodes = []
    for name in _NODE_MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.nodes.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.nodes.{name}":
                continue  # that feature is not in this build
            raise
        nodes.extend(getattr(mod, "NODES", []))
    return nodes


try:
    from comfy_api.latest import ComfyExtension

    class FaithfulExtension(ComfyExtension):
        async def get_node_list(self):
            return _collect_nodes()

    async def comfy_entrypoint():
        return FaithfulExtension()
except ImportError:  # imported outside ComfyUI (pure guidance_core use): no nodes
    logging.getLogger("faithful").debug("comfy_api not available; Faithful nodes are not registered")
