"""The ``ldm`` family: stage 2 of latent diffusion, a diffusion UNet (the ``ddpm`` family's) trained on the
latents of a trained ``ldm-autoencoder`` run, whose decoder turns sampled latents into volumes."""
