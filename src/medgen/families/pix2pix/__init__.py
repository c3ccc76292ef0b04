"""pix2pix in 3D: the ``unet`` generator trained with a conditional PatchGAN discriminator plus L1 (Isola et al. 2017)."""
