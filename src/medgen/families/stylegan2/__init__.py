"""StyleGAN2 in 3D (Karras, Laine, Aittala, Hellsten, Lehtinen and Aila, "Analyzing and Improving the Image
Quality of StyleGAN", CVPR 2020), one of the baselines HA-GAN (Sun et al., IEEE JBHI 2022) is compared with.

A mapping network turns z into a style code w; the synthesis network starts from a learned 4³ constant and
doubles the grid level by level to the volume's size, each level two 3³ convolutions whose weights are
modulated by an affine map of w and demodulated, with per-voxel noise of learned strength; every level's
toRGB output is added to the upsampled image so far (skip architecture). The discriminator is residual, with
the minibatch standard deviation before its last block. Loss: non-saturating logistic with lazy R1
regularisation on the real volumes, Adam (lr 0.002, β = (0, 0.99)); style mixing; w_avg tracked for the
truncation trick; an EMA of G for sampling.

Simplifications (a simplified variant, stated where they are made):

* path-length-free: no path-length regularisation of G (and so no lazy G regularisation step);
* trilinear upsampling + 3³ convolution in G and 2× average pooling in D instead of the authors' [1, 3, 3, 1]
  FIR resampling (:mod:`.networks`);
* unconditional only (classes are refused, like the other unconditional baselines);
* one G forward per iteration serving both updates, and on regularisation iterations the R1 term in the same D
  update as the logistic loss (:mod:`.train`);
* no mixed-precision tricks of the authors' code (conv clamping, fp16 layers): medgen's loop runs bf16 autocast.

:mod:`.config` (architecture, presets), :mod:`.layers` (equalised learning rate, modulated convolution, noise),
:mod:`.networks` (mapping, synthesis, D), :mod:`.train` (the losses and the step the shared loop runs),
:mod:`.model` (what ``medgen.load`` returns), :mod:`.bench` (``medgen bench``), :mod:`.family` (the registry
record).
"""
