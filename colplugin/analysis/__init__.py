"""Analysis: fixed points and Jacobians of the DMF, Elephant statistics of spiking runs, validation."""

from .fixed_points import jacobian, resting_state
from .spiking import compare_rate_to_spiking, comparison_table_md, dmf_rates, population_statistics

__all__ = ["resting_state", "jacobian", "population_statistics", "dmf_rates", "compare_rate_to_spiking",
           "comparison_table_md"]
