"""Disease-progression prediction (DEP-GAN-like, Rachmadi et al. 2020): the follow-up scan from the baseline scan
and the interval between them, as a change of intensities or a deformation (:mod:`.network`), trained with L1
(+ an optional adversarial term); its baselines (:mod:`.baselines`) and scores (:mod:`.evaluate`)."""
