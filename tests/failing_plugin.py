"""A plugin whose methods fail on purpose, for the comparison tests.

``explode`` raises on its first training step; ``crash`` ends its (worker) process at once,
as a segfault or the out-of-memory killer would. Import it by path or as a module
(``sparsekit compare ... --plugin tests/failing_plugin.py``).
"""

from __future__ import annotations

import os

from sparsekit.hookspecs import hookimpl
from sparsekit.methods.base import Method

#: The message ``explode`` raises with (markup on purpose: the report must escape it).
EXPLODE_MESSAGE = "deliberate failure on the first step <b>&</b>"


class Explode(Method):
    name = "explode"
    description = "Raises on its first training step (test plugin)."

    def activation(self, xp, z):
        raise RuntimeError(EXPLODE_MESSAGE)


class Crash(Method):
    name = "crash"
    description = "Ends its process on its first training step (test plugin)."

    def activation(self, xp, z):
        os._exit(3)


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(Explode)
    register.add(Crash)
