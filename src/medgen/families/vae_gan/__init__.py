"""VAE-GAN: a 3D variational autoencoder whose decoder is a GAN generator, with a learned similarity.

The VAE-GAN baseline of the HA-GAN paper's comparison. The method is Larsen et al. 2016
("Autoencoding beyond pixels using a learned similarity metric", ICML): an encoder q(z|x)
with μ and log σ² heads, the generator as the decoder, and a discriminator that judges
real volumes, reconstructions and samples of the prior; the reconstruction error is measured
in a hidden layer of the discriminator (or, as an option, voxel-wise). The 3D networks are
those of Kwon et al. 2019 ("Generation of 3D brain MRI using auto-encoding generative
adversarial networks", MICCAI) and of the HA-GAN authors' 128³ baselines
(:mod:`medgen.families.dcgan3d`; the generator is the one ``wgan-gp`` trains).

:mod:`.config` (architecture, presets), :mod:`.networks` (the encoder), :mod:`.train` (the
losses and the step the shared loop runs), :mod:`.model` (what ``medgen.load`` returns:
``generate``, ``encode``, ``reconstruct``), :mod:`.bench`, :mod:`.family` (the registry record).
"""
