"""Image-conditioned diffusion (SR3, Saharia et al. 2021; Palette, Saharia et al. 2022) in 3D, on the ``ddpm`` family.

The ``ddpm`` UNet denoises the target volume with the condition volumes (the ``inputs`` of an image-to-image
task, :mod:`medgen.families.image_tasks`) concatenated as channels at every step, in training and in the
reverse process. :mod:`.config` (the ``ddpm`` config plus the task fields; presets, hyper-parameters),
:mod:`.train` (the step), :mod:`.sample` (the conditional DDIM/DDPM reverse process, whole or by sliding
windows), :mod:`.model` (what ``medgen.load`` returns: ``translate``), :mod:`.family` (the registry record).
"""
