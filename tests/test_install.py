"""Import smoke tests: the pinned stack imports together."""

import numpy as np


def test_brian2_imports_with_pinned_numpy():
    import brian2

    major, minor = (int(x) for x in np.__version__.split(".")[:2])
    assert (major, minor) < (2, 4), "brian2 2.9 fails to import with numpy >= 2.4"
    assert brian2.__version__ >= "2.9"


def test_public_api_is_small_and_importable():
    import colplugin as cp

    for name in ("ColumnNetwork", "simulate", "load_preset", "Stimulus", "Solver"):
        assert hasattr(cp, name)
    assert set(cp.__all__) == {n for n in cp.__all__ if hasattr(cp, n)}
