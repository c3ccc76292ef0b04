"""α-GAN: the auto-encoding GAN with a code discriminator (Rosca, Lakshminarayanan, Warde-Farley and Mohamed,
"Variational Approaches for Auto-Encoding Generative Adversarial Networks", arXiv:1706.04987, 2017), in the 3D
form of Kwon, Han and Kim ("Generation of 3D Brain MRI Using Auto-Encoding Generative Adversarial Networks",
MICCAI 2019), one of the baselines HA-GAN is compared with.

Four networks: an encoder E (x → ẑ), a generator G (z → x), an image discriminator D (a WGAN-GP critic, as
Kwon et al.) and a code discriminator C (prior codes z against encoder codes ẑ). G learns to reconstruct
(λ·L1, λ = 10) and to fool D with both its reconstructions G(E(x)) and its samples G(z); E learns to
reconstruct and to make its codes look like prior samples to C.

:mod:`.config` (architecture, presets), :mod:`.networks` (E, G, D, C), :mod:`.train` (losses, the step the
shared loop runs), :mod:`.model` (what ``medgen.load`` returns: ``generate``, ``encode``, ``reconstruct``),
:mod:`.family` (the registry record).
"""
