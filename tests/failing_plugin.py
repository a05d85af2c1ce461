"""A plugin whose methods fail on purpose, for the comparison tests.

``explode`` raises on its first training step; ``crash`` ends its (worker) process at once,
as a segfault or the out-of-memory killer would. Import it by path or as a module
(``sparsekit compare ... --plugin tests/failing_plugin.py``).
"""

from __future__ import annotations

import os

from sparsekit.core.activations import Sigmoid
from sparsekit.core.contract import Method
from sparsekit.methods.hookspecs import hookimpl


class _Raises(Sigmoid):
    def value(self, xp, z):
        raise RuntimeError(EXPLODE_MESSAGE)


class _Exits(Sigmoid):
    def value(self, xp, z):
        os._exit(3)


#: The message ``explode`` raises with (markup on purpose: the report must escape it).
EXPLODE_MESSAGE = "deliberate failure on the first step <b>&</b>"


class Explode(Method):
    name = "explode"
    description = "Raises on its first training step (test plugin)."

    hidden_activation = _Raises()


class Crash(Method):
    name = "crash"
    description = "Ends its process on its first training step (test plugin)."

    hidden_activation = _Exits()


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(Explode)
    register.add(Crash)
