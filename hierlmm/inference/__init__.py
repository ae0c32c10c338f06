"""Inference as lmerTest and pbkrtest give it.

============================  ==============================================  =====================
file                          what                                            R
============================  ==============================================  =====================
``satterthwaite.py``          Satterthwaite df for t and F tests              lmerTest
``kenward_roger.py``          adjusted Var(β̂) and df                          pbkrtest
``contrasts.py``              Type I and Type III contrast matrices           lmerTest
``ftests.py``                 coefficient table, F-test table                 ``summary``, ``anova``
``lrt.py``                    ``hl.anova``, ``ranova``, χ̄² mixture            lme4, lmerTest
``confint.py``                Wald, profile, parametric bootstrap intervals   ``confint.merMod``
``simulate.py``               draws of y from the fit                          ``simulate``
``numderiv.py``               Richardson-extrapolated derivatives             numDeriv
============================  ==============================================  =====================
"""

from hierlmm.inference.lrt import anova, chibar_pvalue

__all__ = ["anova", "chibar_pvalue"]
