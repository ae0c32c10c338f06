"""Progress bars for long computations (profiles, the bootstrap): tqdm's ``auto`` bar, a
widget in Jupyter and text on a terminal, so a notebook user sees progress too."""

from __future__ import annotations

import sys

__all__ = ["progress", "interactive"]


def interactive() -> bool:
    """Standard error is a terminal, or the code runs in a Jupyter kernel."""
    if sys.stderr.isatty():
        return True
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def progress(total: int, desc: str, show: bool | None = None):
    """A progress bar over ``total`` steps (``.update(n)``, ``.close()``); ``show=None``:
    when :func:`interactive`. Disabled bars cost nothing."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not (interactive() if show is None else show), leave=False,
                file=sys.stderr)
