"""WGAN-GP: a 3D DCGAN-style generator and critic trained with the Wasserstein loss and a gradient penalty.

The WGAN-GP baseline of the HA-GAN paper's comparison. The method is Gulrajani et al. 2017
("Improved training of Wasserstein GANs", NeurIPS): the critic minimises
E[D(G(z))] − E[D(x)] + λ·E[(‖∇D(x̂)‖₂ − 1)²] over random interpolates x̂ between real and
generated volumes (λ = 10), with ``n_critic`` = 5 critic updates per generator update and
Adam (lr 1e-4, β = (0, 0.9)). The 3D networks are those of the brain-MRI baselines of Kwon
et al. 2019 ("Generation of 3D brain MRI using auto-encoding generative adversarial
networks", MICCAI), extended to 128³ as in the HA-GAN authors' baseline code, with the
critic's BatchNorm replaced by a per-volume normalisation, which the gradient penalty
requires (:mod:`medgen.families.dcgan3d`).

:mod:`.config` (architecture, presets), :mod:`.train` (the losses and the step the shared
loop runs), :mod:`.model` (what ``medgen.load`` returns), :mod:`.bench` (``medgen bench``),
:mod:`.family` (the registry record).
"""
