"""The numba options of every kernel: compiled once and cached on disk (``cache=True``), and
releasing the GIL (``nogil=True``) so that the event loop runs while a kernel computes.

A foundation of its own: the policy kernels, the forecast loop and the signing of decision
ids (``bandit.tokens``) all compile with it.
"""

from __future__ import annotations

import numba

jit = numba.njit(cache=True, nogil=True)
