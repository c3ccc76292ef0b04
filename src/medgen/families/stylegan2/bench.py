"""Speed and memory of the StyleGAN2 family: seconds per training iteration (one D update, with the R1 penalty
on every ``r1_every``-th iteration, one G update, the EMA update and data loading) and per generated volume;
what is timed is described in :mod:`medgen.families.wgan_gp.bench`, which the GAN baselines share. Iteration 0
regularises (R1) and is the warm-up by default, so the timed iterations 1 … R are plain ones (R < 16).

    medgen bench train --family stylegan2 --preset small --size 64
    medgen bench generate --family stylegan2 --preset paper --size 128
"""

from __future__ import annotations

import sys

from medgen.families.bench import child_main
from medgen.families.wgan_gp.bench import KINDS, make  # noqa: F401  (KINDS re-exported)

_bench = make("stylegan2", "medgen.families.stylegan2.bench")
check_request, measure_train, measure_generate = _bench.check_request, _bench.measure_train, _bench.measure_generate
measure, run_isolated, describe = _bench.measure, _bench.run_isolated, _bench.describe


if __name__ == "__main__":
    sys.exit(child_main(measure, sys.argv[1:]))
