"""Analysis: Elephant statistics of spiking runs, validation; fixed points and Jacobians of the DMF
(from :mod:`colplugin.solve.fixed_points`, where the tasks can use them too)."""

from ..solve.fixed_points import jacobian, resting_state
from .spiking import compare_rate_to_spiking, comparison_table_md, dmf_rates, population_statistics

__all__ = ["resting_state", "jacobian", "population_statistics", "dmf_rates", "compare_rate_to_spiking",
           "comparison_table_md"]
