"""Networks: loading a target, the seeded random network, per-weight problems, the pruned ticket."""
