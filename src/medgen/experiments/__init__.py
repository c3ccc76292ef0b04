"""The paper's experiments as commands: ``medgen experiment NAME [--scale demo|full]``.

One module per experiment. Each defines

* ``HELP``: one line for ``medgen experiment --help``;
* ``DESCRIPTION``: what it measures and what it writes;
* ``add_arguments(parser)``: its own options (may be absent);
* ``run(ws, out, args) -> dict``: the work, given a
  :class:`~medgen.experiments.workspace.Workspace` (data, trained runs, samples)
  and an :class:`~medgen.experiments.workspace.ExperimentOutput` (tables, figures);
  returns the results recorded in ``experiment.json``.

:data:`EXPERIMENTS` is the registry, in the order of the paper; a name's module is the name with ``_`` for
``-`` (``domain-adaptation`` → ``domain_adaptation``).
"""

from __future__ import annotations

EXPERIMENTS: tuple[str, ...] = (
    "synthesis",
    "ablation",
    "augmentation",
    "features",
    "latent",
    "embedding",
    "memory",
    "guidance",
    "recipes",
    "image2image",
    "domain-adaptation",
    "anomaly",
    "registration",
    "progression",
    "explanation",
)
