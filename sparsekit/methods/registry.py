"""The method registry and the plugin manager that fills it.

Nothing is created at import time: :func:`make_plugin_manager` builds a fresh
:class:`pluggy.PluginManager` and :func:`load_registry` asks every plugin (the built-ins
first, then the packages that declare an entry point in the ``sparsekit`` group) to register
its methods. Tests and embedding applications build their own, with their own plugins.

Environment switches:

* ``SPARSEKIT_DISABLE_PLUGIN_AUTOLOAD=1`` – do not load entry-point plugins.
* ``SPARSEKIT_BLOCK_PLUGINS=name1,name2`` – skip these plugins (built-in ones too, by name
  such as ``sparsekit.methods.ksparse``, or entry-point names).
* ``SPARSEKIT_TRACE_HOOKS=1`` – print every hook call and result to stderr.

Extra plugins can also be named by import spec (``"package.module"``,
``"package.module:attr"`` or ``"path/to/file.py"``): :func:`load_plugin` imports one,
:func:`plugin_spec` writes one for a module, :func:`registry_for` builds a registry with them
(worker processes of ``compare`` and ``sweep`` rebuild theirs this way).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from sparsekit.core.contract import BaseMethod, check_method_class
from sparsekit.errors import PluginError, UnknownMethodError
from sparsekit.files import one_line_reason
from sparsekit.methods import hookspecs

#: Modules of the built-in methods, registered exactly like third-party plugins.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "sparsekit.methods.plain",
    "sparsekit.methods.l2",
    "sparsekit.methods.kl",
    "sparsekit.methods.arora",
    "sparsekit.methods.ksparse",
    "sparsekit.methods.topk",
    "sparsekit.methods.batchtopk",
    "sparsekit.methods.jumprelu",
    "sparsekit.methods.gated",
    "sparsekit.methods.matryoshka",
    "sparsekit.methods.standard",
    "sparsekit.methods.mp_sae",
    "sparsekit.methods.dictionary",
)

ENTRY_POINT_GROUP = "sparsekit"


class DuplicateMethodError(PluginError):
    """Two plugins register a method with the same name (always fatal: which one is meant?)."""


@dataclass(frozen=True)
class MethodInfo:
    """A registered method and the plugin it came from."""

    cls: type[BaseMethod]
    origin: str

    @property
    def name(self) -> str:
        return self.cls.name


@dataclass
class PluginFailure:
    """A plugin that could not be loaded or failed while registering."""

    plugin: str
    error: str


@dataclass
class MethodRegistry:
    """Method classes by name. Plugins call :meth:`add` from their registration hook."""

    methods: dict[str, MethodInfo] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    _origin: str = "<unknown>"

    def add(self, cls: type[BaseMethod]) -> type[BaseMethod]:
        """Register ``cls``; a second method with the same name is an error naming both.

        A class that fails :func:`~sparsekit.core.contract.check_method_class` (it overrides
        something the step no longer reads, or mixes the method types) is refused with a
        :class:`PluginError` saying what to declare instead: it would otherwise train as
        something else than it says.
        """
        if not (isinstance(cls, type) and issubclass(cls, BaseMethod)):
            raise PluginError(
                f"{self._origin}: register.add() expects a Method subclass, got {cls!r}"
            )
        check_method_class(cls)  # (load_registry records the plugin's name with the error)
        name = cls.name
        if not name or not isinstance(name, str):
            raise PluginError(f"{self._origin}: method class {cls.__qualname__} has no name")
        existing = self.methods.get(name)
        if existing is not None:
            raise DuplicateMethodError(
                f"method name {name!r} is registered twice: by {existing.origin} "
                f"({existing.cls.__module__}.{existing.cls.__qualname__}) and by {self._origin} "
                f"({cls.__module__}.{cls.__qualname__})"
            )
        self.methods[name] = MethodInfo(cls, self._origin)
        return cls

    def get(self, name: str) -> type[BaseMethod]:
        """The method class called ``name``; :class:`UnknownMethodError` if there is none."""
        try:
            return self.methods[name].cls
        except KeyError:
            known = ", ".join(sorted(self.methods)) or "none"
            raise UnknownMethodError(f"unknown method {name!r} (available: {known})") from None

    def create(self, name: str, **params: Any) -> BaseMethod:
        """An instance of method ``name`` with the given parameters."""
        return self.get(name)(**params)

    def __contains__(self, name: object) -> bool:
        return name in self.methods

    def __iter__(self) -> Iterator[MethodInfo]:
        return iter(self.methods[name] for name in sorted(self.methods))

    def __len__(self) -> int:
        return len(self.methods)


def make_plugin_manager(
    plugins: Iterable[Any] = (),
    *,
    builtins: bool = True,
    entry_points: bool | None = None,
) -> pluggy.PluginManager:
    """A new plugin manager with the hook specs, the built-ins and the installed plugins.

    ``plugins`` are extra plugin objects or modules (e.g. a test's own plugin).
    ``entry_points`` defaults to true unless ``SPARSEKIT_DISABLE_PLUGIN_AUTOLOAD`` is set.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    blocked = {
        b.strip() for b in os.environ.get("SPARSEKIT_BLOCK_PLUGINS", "").split(",") if b.strip()
    }
    for name in blocked:
        pm.set_blocked(name)
    if os.environ.get("SPARSEKIT_TRACE_HOOKS"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    if builtins:
        import importlib

        for module_name in BUILTIN_PLUGINS:
            if module_name not in blocked:
                pm.register(importlib.import_module(module_name), name=module_name)
    for plugin in plugins:
        pm.register(plugin)
    if entry_points is None:
        entry_points = not os.environ.get("SPARSEKIT_DISABLE_PLUGIN_AUTOLOAD")
    failures: list[PluginFailure] = []
    if entry_points:
        failures = _load_entry_points(pm, blocked)
    pm._sparsekit_failures = failures  # type: ignore[attr-defined]
    return pm


def _load_entry_points(pm: pluggy.PluginManager, blocked: set[str]) -> list[PluginFailure]:
    """Register each entry point of the group; a broken one is recorded, not fatal."""
    from importlib.metadata import entry_points

    failures = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in blocked or pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken plugin must not break the others
            failures.append(
                PluginFailure(f"{ep.name} ({ep.value})", one_line_reason(exc, name=True))
            )
            continue
        unknown = _unknown_hooks(pm, plugin)
        if unknown:  # a misspelt hook would otherwise make the plugin silently do nothing
            pm.unregister(plugin)
            failures.append(
                PluginFailure(
                    f"{ep.name} ({ep.value})",
                    f"unknown hook {unknown[0]!r} (known: "
                    + ", ".join(sorted(n for n, c in vars(pm.hook).items() if c.has_spec()))
                    + ")",
                )
            )
    return failures


def _unknown_hooks(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    """Hooks ``plugin`` implements that no hookspec declares (as pluggy's check_pending)."""
    unknown = []
    for name, caller in vars(pm.hook).items():
        if name.startswith("_") or caller.has_spec():
            continue
        if any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls()):
            unknown.append(name)
    return unknown


def load_registry(pm: pluggy.PluginManager | None = None) -> MethodRegistry:
    """Ask every registered plugin for its methods; returns the filled registry.

    A plugin whose hook raises (including ``register.add`` refusing a class) is recorded in
    ``registry.failures`` (and listed by ``sparsekit list``); a duplicate method name is
    always an error (:class:`DuplicateMethodError`).
    """
    if pm is None:
        pm = make_plugin_manager()
    registry = MethodRegistry()
    registry.failures.extend(getattr(pm, "_sparsekit_failures", []))
    hook_plugins = {impl.plugin for impl in pm.hook.sparsekit_register_methods.get_hookimpls()}
    ordered = [(n, p) for n, p in pm.list_name_plugin() if p in hook_plugins]
    for name, plugin in ordered:
        # One plugin at a time, through pluggy (so tracing works), to know who registered what.
        others = [p for _, p in ordered if p is not plugin]
        call = pm.subset_hook_caller("sparsekit_register_methods", remove_plugins=others)
        registry._origin = _origin_of(name, plugin)
        try:
            call(register=registry)
        except DuplicateMethodError:
            raise
        except Exception as exc:
            registry.failures.append(
                PluginFailure(registry._origin, one_line_reason(exc, name=True))
            )
    registry._origin = "<unknown>"
    return registry


def _origin_of(name: str, plugin: Any) -> str:
    if name in BUILTIN_PLUGINS:
        return f"builtin ({name})"
    module = getattr(plugin, "__name__", None) or type(plugin).__module__
    return f"plugin {name}" if name == module else f"plugin {name} ({module})"


# --------------------------------------------------------------------------- plugins by name


def plugin_spec(plugin: Any) -> str:
    """An import spec for ``plugin`` (a spec string or an importable module), which another
    process can load again with :func:`load_plugin` (a file becomes an absolute path)."""
    if isinstance(plugin, (str, os.PathLike)):
        spec = os.fspath(plugin)
        target, colon, attr = spec.partition(":")
        if target.endswith(".py") or "/" in target or os.sep in target:
            # A file: absolute, so that workers and later readers find it from anywhere.
            return str(Path(target).resolve()) + colon + attr
        return spec
    if isinstance(plugin, types.ModuleType):
        name = plugin.__name__
        if name != "__main__" and importlib.util.find_spec(name) is not None:
            return name
        if getattr(plugin, "__file__", None):
            return str(Path(plugin.__file__).resolve())
    raise PluginError(
        f"cannot pass plugin {plugin!r} to worker processes: give an importable module or an "
        "import spec ('package.module', 'package.module:attr' or 'path/to/file.py')"
    )


def load_plugin(spec: str) -> Any:
    """The plugin object named by ``spec``: ``module``, ``module:attr``, ``file.py[:attr]``."""
    target, _, attr = spec.partition(":") if not _is_windows_drive(spec) else (spec, "", "")
    try:
        if target.endswith(".py") or os.sep in target or "/" in target:
            path = Path(target).resolve()
            if not path.is_file():
                raise PluginError(f"plugin {spec!r}: no such file {path}")
            name = f"sparsekit_plugin_{path.stem}"
            module = sys.modules.get(name)
            if module is None or getattr(module, "__file__", None) != str(path):
                loader_spec = importlib.util.spec_from_file_location(name, path)
                if loader_spec is None or loader_spec.loader is None:
                    raise PluginError(f"plugin {spec!r}: cannot import {path}")
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[name] = module
                loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        return getattr(module, attr) if attr else module
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"cannot load plugin {spec!r}: {type(exc).__name__}: {exc}") from None


def _is_windows_drive(spec: str) -> bool:
    return len(spec) > 2 and spec[1] == ":" and spec[2] in "\\/"


def registry_for(plugins: Sequence[str]) -> MethodRegistry:
    """:func:`load_registry` with the extra plugins named by import ``plugins`` specs (what a
    worker process of ``compare`` or ``sweep`` builds again from the specs it is given)."""
    return load_registry(make_plugin_manager([load_plugin(p) for p in plugins]))
