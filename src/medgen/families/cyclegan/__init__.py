"""CycleGAN in 3D: unpaired translation between two domains with two ``unet`` generators, two PatchGAN
discriminators and cycle consistency (Zhu et al. 2017)."""
