"""The search harness: the shrink CLI (study specs, pruning, storage and workers are to come)."""
