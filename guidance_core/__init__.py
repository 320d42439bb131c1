"""Pure torch/numpy math of the Faithful node pack. Nothing in this package imports ComfyUI."""
