"""The ``ldm-autoencoder`` family: stage 1 of latent diffusion, a 3D KL autoencoder (MONAI ``AutoencoderKL``)
trained with L1 + KL + patch-adversarial losses; its latents are what the ``ldm`` family diffuses."""
