"""Developer tools: host bootstrap, tiny models and checkpoints, a headless server driver, the example runner."""
