"""The hooks a sparsekit plugin can implement.

A plugin is any module or object with functions marked ``@sparsekit.hookimpl``. Built-in
methods are registered through exactly these hooks. Each hook's docstring is its contract.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT_NAME = "sparsekit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def sparsekit_register_methods(register: Any) -> None:
    """Register sparsity methods by calling ``register.add(MethodClass)``.

    ``register`` is a :class:`sparsekit.methods.registry.MethodRegistry` (not imported here:
    the registry imports these specs).

    Called once when a registry is built. ``MethodClass`` is a subclass of
    :class:`sparsekit.Method`; add as many as the plugin provides. Do no expensive work
    here: the registry is built for every command, including ``sparsekit list``.
    """
