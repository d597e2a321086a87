"""Packages that are also functions: ``ferkit.train(...)`` and ``ferkit.evaluate(...)``.

``ferkit.train`` is both the training package and the function a Python user calls; Python sets a package's
submodules as its attributes, so a plain function of that name in ``ferkit/__init__.py`` would be replaced by the
package on first import. Giving the package a ``__call__`` keeps one name for both.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any


def make_callable(package: str, fn: Callable[..., Any]) -> None:
    """Calling the module ``package`` calls ``fn`` with the same arguments."""

    class CallablePackage(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

    CallablePackage.__call__.__doc__ = fn.__doc__
    sys.modules[package].__class__ = CallablePackage
