"""The ``fanogan`` family: f-AnoGAN (Schlegl et al., Medical Image Analysis 2019) on a trained HA-GAN.

An encoder E: x → z is trained against the frozen generator G and discriminator D of a
finished ``hagan`` run (``medgen train --family fanogan --generator RUN``) with the izi_f
objective; the loaded model reconstructs volumes as G(E(x)) and scores anomalies by the
image and discriminator-feature residuals (:mod:`.train`, :mod:`.model`).
"""
