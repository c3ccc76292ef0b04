"""Progressive growing of GANs in 3D (PGGAN: Karras, Aila, Laine and Lehtinen, "Progressive Growing of GANs for
Improved Quality, Stability, and Variation", ICLR 2018), one of the baselines HA-GAN is compared with.

The generator and the discriminator start at 4³ and grow by doubling the grid to the volume's size; each new
block is faded in with a weight α rising linearly from 0 to 1, then trained alone for a stable phase. Both
networks are built at full size from the start and a training step runs only the blocks of the current
resolution (:mod:`.schedule` maps an iteration to its resolution and α, from the iteration index only, so a
resumed run continues exactly).

:mod:`.config` (architecture, presets), :mod:`.layers` (equalised learning rate, pixel norm),
:mod:`.networks` (G, D), :mod:`.schedule` (iteration → resolution, α), :mod:`.train` (WGAN-GP with ε-drift,
the step the shared loop runs), :mod:`.model` (what ``medgen.load`` returns), :mod:`.family` (the registry
record).
"""
