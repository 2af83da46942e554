"""Special functions in pure PyTorch (differentiable, on the tensors' device and dtype).

* :func:`log_bessel_iv`, :func:`log_bessel_iv_scaled`, :func:`bessel_iv_ratio`,
  :func:`bessel_iv_terms` -- the modified Bessel function of the first kind I_v(x), in log
  space, for a python-scalar order v >= 0 (the von Mises-Fisher needs v = m/2 - 1);
  :func:`evaluate_forms` gives the forms behind them to a caller that combines its own (the vMF's KL),
  :func:`prepare_argument` and :func:`scalar` the dtype handling and cached constants they share, :func:`one_side`
  which side of a two-branch function's switch a CPU batch lies on.
* :func:`autocast_off`, :func:`at_least_float32` -- full precision under ``torch.autocast`` (:mod:`.precision`).
"""

from . import bessel, precision
from .bessel import *  # noqa: F403  (the names of bessel.__all__, listed once there)
from .precision import *  # noqa: F403

__all__ = list(bessel.__all__) + list(precision.__all__)
