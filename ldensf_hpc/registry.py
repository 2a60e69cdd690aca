"""Name -> object registries, loaded on first use (methods, cases, kernels, surrogates).

An entry is ``"package.module:attribute"``; looking a name up imports the module once.
An unknown name is refused with the list of valid ones. Code outside a registry asks it
for an object by name and never branches on the name itself.

A registry may be open to code outside the package: entries of its entry-point ``group``
(``[project.entry-points."ldensf_hpc.cases"]``) join it, and, where ``importable``, a name
that is itself ``"package.module:attribute"`` is imported on first use (checked by ``accept``)
and stays registered under that name, so that every process that imports it finds it again.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points

from .errors import ConfigError


class Registry(Mapping):
    """A read-only mapping ``name -> object`` of one kind (e.g. "method")."""

    def __init__(self, kind: str, entries: dict[str, str], error: type[Exception] = ConfigError,
                 group: str | None = None, importable: bool = False, accept: Callable[[object], str | None] = None):
        self.kind, self._entries, self._error, self._loaded = kind, dict(entries), error, {}
        self._group, self._importable, self._accept = group, importable, accept

    def _known(self) -> dict[str, str]:
        if self._group is not None:  # read the installed entry points once
            for point in entry_points(group=self._group):
                self._entries.setdefault(point.name, point.value)
            self._group = None
        return self._entries

    def _import(self, name: str, path: str):
        module, _, attribute = path.partition(":")
        what = f"{self.kind} {name!r}" + (f" ({path})" if path != name else "")
        try:
            obj = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            raise self._error(f"cannot import {what}: {type(exc).__name__}: {exc}") from None
        why = self._accept(obj) if self._accept else None
        if why:
            raise self._error(f"{what} {why}")
        return obj

    def __getitem__(self, name: str):
        self.check(name)
        if name not in self._loaded:
            self._loaded[name] = self._import(name, self._entries[name])
        return self._loaded[name]

    def __iter__(self):
        return iter(self._known())

    def __len__(self) -> int:
        return len(self._known())

    def __contains__(self, name) -> bool:
        return name in self._known()

    def check(self, name: str) -> str:
        """``name`` if registered (an importable ``module:attribute`` name is imported and checked
        now), else the error listing the valid names."""
        known = self._known()
        if name in known:
            return name
        if self._importable and isinstance(name, str) and name.count(":") == 1 and all(name.split(":")):
            self._loaded[name] = self._import(name, name)
            known[name] = name
            return name
        extra = " or an importable package.module:Class" if self._importable else ""
        raise self._error(f"unknown {self.kind} {name!r}; choose one of {', '.join(known)}{extra}")
