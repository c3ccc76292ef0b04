"""Denoising diffusion (DDPM, Ho et al. 2020) in image space: a 3D UNet denoiser from MONAI.

:mod:`.config` (architecture and noise schedule, presets), :mod:`.train` (the
ε-/v-prediction objective and the step the shared loop runs), :mod:`.sample` (the reverse
process with DDPM or DDIM steps and classifier-free guidance), :mod:`.model` (what
``medgen.load`` returns), :mod:`.family` (the registry record).

Networks and schedulers are MONAI's (``DiffusionModelUNet``, ``DDPMScheduler``,
``DDIMScheduler``); medgen adds the training step, class conditioning with
classifier-free guidance through the UNet's class embedding, reproducible per-volume
sampling and the same tools as every family.
"""
