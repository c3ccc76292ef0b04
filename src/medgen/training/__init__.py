"""HA-GAN training.

* :mod:`.trainer` — the training loop (:func:`~medgen.training.trainer.train`), used by ``medgen train``;
* :mod:`.losses` — the paper's D, G, E^H and E^G losses;
* :mod:`.checkpoint` — safetensors checkpoints, atomic and safe to load
  (:func:`~medgen.training.checkpoint.load_weights` gives ``{"G", "G_ema", "D", "E"}`` state dicts);
* :mod:`.distributed` — ``torchrun`` set-up and the resumable data sampler;
* :mod:`.ema` — the EMA copy of the generator used for sampling.

To rebuild a trained generator::

    from medgen.config import RunConfig
    from medgen.models.hagan import Generator
    from medgen.training.checkpoint import load_weights

    cfg = RunConfig.load(run_dir)
    G = Generator(cfg.hagan_config())
    weights = load_weights(run_dir)           # latest checkpoint of the run
    G.load_state_dict(weights.get("G_ema", weights["G"]))
"""
