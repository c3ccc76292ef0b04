"""Evaluation of generated 3D volumes: fidelity, diversity, anatomy and memorisation.

Protocol
--------
Feature metrics compare the distributions of real and generated volumes in the feature
space of a 3D network (:mod:`medgen.metrics.features`):

* :mod:`~medgen.metrics.fid` — Fréchet distance of Gaussian fits (FID);
* :mod:`~medgen.metrics.kid` — unbiased polynomial-kernel MMD² over subsets (KID);
* :mod:`~medgen.metrics.mmd` — MMD² with a Gaussian kernel, median-heuristic bandwidth, in the
  HA-GAN evaluation's convention;
* :mod:`~medgen.metrics.prdc` — precision, recall, density, coverage (Naeem et al. 2020);
* :mod:`~medgen.metrics.inception_score` — IS from a domain classifier's class probabilities;
* :mod:`~medgen.metrics.uncertainty` — mean ± std over bootstrap resamples or splits.

Weight-free metrics work on the voxels: :mod:`~medgen.metrics.diversity` (MS-SSIM between
generated pairs), :mod:`~medgen.metrics.anatomy` (Hounsfield-unit anatomy statistics for CT,
tissue fractions for MRI) and :mod:`~medgen.metrics.memorisation` (distance of each sample to
its nearest training volume, against held-out patients). :mod:`~medgen.metrics.registry`
names them all for ``medgen evaluate``; :mod:`~medgen.metrics.volumes` reads the folders (or
takes arrays) and :mod:`~medgen.metrics.cache` keeps real-data features on disk.
:func:`medgen.metrics.evaluate.evaluate` is the whole evaluation as a library call (what needs
a trained model, an encoder or a classifier, is given to it ready to use; :func:`medgen.api.evaluate`
loads them from folders).

Beyond unpaired sets, the registry holds paired metrics (:mod:`~medgen.metrics.paired`: PSNR,
SSIM, NMSE of an output volume against its target, :func:`~medgen.metrics.evaluate.evaluate_paired`)
and score metrics (:mod:`~medgen.metrics.scores`: AUROC, AUPRC of anomaly scores or maps against
labels or masks, :func:`~medgen.metrics.evaluate.evaluate_scores`).

The paper's numbers
-------------------
The HA-GAN paper reports FID and MMD on features of MedicalNet's 3D ResNet-50 (Med3D).
Its weights are not downloaded by medgen: with the MedicalNet file (``resnet_50.pth`` or
``resnet_50_23dataset.pth`` from the MedicalNet release), the paper's protocol is::

    medgen evaluate --real R --fake F --features med3d --weights resnet_50_23dataset.pth \\
        --paper-protocol --out metrics.json

``--paper-protocol`` feeds the volumes as the authors' evaluation code did: at their
preprocessed size (128³ or 256³, ``--input-size native``), raw [-1, 1] intensities and
``(z, y, x)`` axis order. Without it, med3d features use MedicalNet's own training
convention (per-volume z-score, nibabel axis order). The paper's ± is over cross-validation
folds; ``--bootstrap N`` gives a single-run estimate instead.

Without weights, ``--features random`` runs the same network with seeded random weights.
Those numbers rank models evaluated the same way on the same data, but every table and JSON
says "random features: not comparable with published values". Nothing runs silently in
place of the paper's protocol: ``medgen evaluate`` without ``--weights`` or an explicit
``--features random`` stops with an error.
"""
