"""ComfyUI nodes of the Faithful pack: thin V3 wrappers around guidance_core. Each module lists its NODES."""
