"""Plots of fits and posteriors (matplotlib, imported when a function is called).

Every function takes a fit (or posterior) and returns a :class:`matplotlib.figure.Figure`;
none calls ``plt.show()``.

==================  ================================================================
file                functions
==================  ================================================================
``diagnostics.py``  ``qq_ranef``, ``qq_residuals``, ``residuals_vs_fitted``,
                    ``residuals_by_group``, ``diagnostics`` (all four)
``ranef.py``        ``caterpillar``, ``shrinkage``
``data.py``         ``spaghetti``, ``effect``
``bayes.py``        ``posterior_densities``, ``posterior_grid``, ``plugin_vs_full``, ``limit_path``
``structures.py``   ``implied_correlation`` (what covariance structures imply, side by side)
``_common.py``      ``figure`` (an empty figure of your own that shows inline too)
==================  ================================================================
"""

from hierlmm.plots._common import figure
from hierlmm.plots.bayes import limit_path, plugin_vs_full, posterior_densities, posterior_grid
from hierlmm.plots.data import effect, spaghetti
from hierlmm.plots.diagnostics import diagnostics, qq_ranef, qq_residuals, residuals_by_group, residuals_vs_fitted
from hierlmm.plots.ranef import caterpillar, shrinkage
from hierlmm.plots.structures import implied_correlation

__all__ = ["figure", "qq_ranef", "qq_residuals", "residuals_vs_fitted", "residuals_by_group", "diagnostics",
           "caterpillar", "shrinkage", "spaghetti", "effect", "posterior_densities", "posterior_grid", "plugin_vs_full",
           "limit_path", "implied_correlation"]
