"""The ``autoencoder`` family: the autoencoder and VAE baselines of unsupervised anomaly detection.

Baur et al. 2021 ("Autoencoders for unsupervised anomaly segmentation in brain MR images: a
comparative study", Medical Image Analysis 69) compare such models: trained on normal volumes only,
they learn to compress and restore normal anatomy, and what they cannot reconstruct — the residual
|x − x̂| — flags an anomaly (``medgen anomaly RUN DATA``). Both networks are MONAI's: ``AutoEncoder``
(``variational: false``, a spatial bottleneck, reconstruction loss only) and ``VarAutoEncoder``
(``variational: true``, a dense latent, reconstruction + β·KL; ``medgen train --recipe vae``).

:mod:`.config` (architecture, presets, the ``vae`` recipe), :mod:`.networks` (the MONAI networks and
what is added to them), :mod:`.train` (losses and the step the shared loop runs), :mod:`.model` (what
``medgen.load`` returns: ``reconstruct``, ``encode``, ``decode``; the VAE also ``generate``),
:mod:`.bench`, :mod:`.family` (the registry record).
"""
