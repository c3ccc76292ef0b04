"""Speed and memory of the VAE-GAN family: seconds per training iteration (one simultaneous E, G and D update,
the EMA update and data loading) and per generated volume (a prior sample); what is timed is described in
:mod:`medgen.families.wgan_gp.bench`, which both families share.

    medgen bench train --family vae-gan --preset small --size 64
    medgen bench generate --family vae-gan --preset paper --size 128
"""

from __future__ import annotations

import sys

from medgen.families.bench import child_main
from medgen.families.wgan_gp.bench import KINDS, make  # noqa: F401  (KINDS re-exported)

_bench = make("vae-gan", "medgen.families.vae_gan.bench")
check_request, measure_train, measure_generate = _bench.check_request, _bench.measure_train, _bench.measure_generate
measure, run_isolated, describe = _bench.measure, _bench.run_isolated, _bench.describe


if __name__ == "__main__":
    sys.exit(child_main(measure, sys.argv[1:]))
