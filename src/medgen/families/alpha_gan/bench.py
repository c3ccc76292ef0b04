"""Speed and memory of the α-GAN family: seconds per training iteration (one simultaneous update of E, G, the
image critic D and the code discriminator C, the EMA update and data loading) and per generated volume (a prior
sample); what is timed is described in :mod:`medgen.families.wgan_gp.bench`, shared by the DCGAN-style families.

    medgen bench train --family alpha-gan --preset small --size 64
    medgen bench generate --family alpha-gan --preset paper --size 128
"""

from __future__ import annotations

import sys

from medgen.families.bench import child_main
from medgen.families.wgan_gp.bench import KINDS, make  # noqa: F401  (KINDS re-exported)

_bench = make("alpha-gan", "medgen.families.alpha_gan.bench")
check_request, measure_train, measure_generate = _bench.check_request, _bench.measure_train, _bench.measure_generate
measure, run_isolated, describe = _bench.measure, _bench.run_isolated, _bench.describe


if __name__ == "__main__":
    sys.exit(child_main(measure, sys.argv[1:]))
