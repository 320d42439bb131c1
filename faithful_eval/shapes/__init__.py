"""Shapes world: a procedurally generated world, its exact evaluator and the configuration of the small model
trained on it (see docs/shapes.md)."""
