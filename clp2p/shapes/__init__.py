"""The shapes world: a synthetic world, its ground-truth metrics and its tiny model."""
