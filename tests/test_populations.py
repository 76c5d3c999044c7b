import numpy as np
import pytest

from colplugin.params.names import POPULATIONS, SIGNS, PopulationMatrix, pop_index


def test_order_and_signs():
    assert POPULATIONS == ("L23E", "L23I", "L4E", "L4I", "L5E", "L5I", "L6E", "L6I")
    assert list(SIGNS) == [1, -1, 1, -1, 1, -1, 1, -1]
    assert pop_index("L2/3E") == 0


def test_matrix_by_name_is_target_source():
    M = PopulationMatrix(np.arange(64.0).reshape(8, 8))
    assert M["L23E", "L4E"] == 2.0  # row 0 (target L2/3E), column 2 (source L4E)
    assert M["L4E", "L23E"] == 16.0
    with pytest.raises(KeyError, match="unknown population"):
        M["L1E", "L4E"]
