"""Brian2 vs NEST on the PD14 microcircuit at scale 0.1 (k 0.5), 3 seeds each: seed means within 5 %.

Minutes of CPU: marked slow (run with ``-m slow``). validation/backend_parity.py does the same
and writes the numbers.
"""

import numpy as np
import pytest

from colplugin.analysis.validation import run_seeds
from colplugin.params.names import POPULATIONS
from colplugin.spiking import pd14_microcircuit


@pytest.mark.slow
def test_microcircuit_rates_agree_across_backends():
    pytest.importorskip("nest")
    net = pd14_microcircuit(scale=0.1, k_scale=0.5)
    means = {}
    for backend in ("brian2", "nest"):
        res = run_seeds(net, 2.5, [0, 1, 2], backend=backend)
        means[backend] = np.mean([[r.rates(0.5)[p] for p in POPULATIONS] for r in res], axis=0)
    np.testing.assert_allclose(means["brian2"], means["nest"], rtol=0.05)
