"""Model families: one package per family, listed in :mod:`medgen.families.registry`.

A family is a small module of plain functions and dataclasses (architecture
config and presets, networks, training step, sampling, loading); the shared
loop (:mod:`medgen.training.loop`), the checkpoints, the CLI and the report
serve every registered family alike. See docs/architecture.md, "Adding a family".
"""
