"""The family-agnostic training machinery.

* :mod:`.loop` — the training loop every family runs on (:func:`~medgen.training.loop.train`);
* :mod:`.family` — what a family gives the loop (:class:`~medgen.training.family.Family`, :class:`~medgen.training.family.Step`);
* :mod:`.runconfig` — ``RUN/config.yaml`` (:class:`~medgen.training.runconfig.RunConfig`);
* :mod:`.checkpoint` — safetensors checkpoints, atomic and safe to load
  (:func:`~medgen.training.checkpoint.load_weights` gives ``{network name: state_dict}``);
* :mod:`.distributed` — ``torchrun`` set-up and the resumable data sampler;
* :mod:`.ema` — the EMA copy of the network a family samples from.

The families themselves (HA-GAN's networks, losses and step) live in
:mod:`medgen.families`, which imports this package, never the reverse.
"""
