"""Name -> object registries, loaded on first use (methods, cases, kernels, surrogates).

An entry is ``"package.module:attribute"``; looking a name up imports the module once.
An unknown name is refused with the list of valid ones. Code outside a registry asks it
for an object by name and never branches on the name itself.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping

from .errors import ConfigError


class Registry(Mapping):
    """A read-only mapping ``name -> object`` of one kind (e.g. "method")."""

    def __init__(self, kind: str, entries: dict[str, str], error: type[Exception] = ConfigError):
        self.kind, self._entries, self._error, self._loaded = kind, dict(entries), error, {}

    def __getitem__(self, name: str):
        if name not in self._entries:
            raise self._error(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}")
        if name not in self._loaded:
            module, attribute = self._entries[name].split(":")
            self._loaded[name] = getattr(importlib.import_module(module), attribute)
        return self._loaded[name]

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def check(self, name: str) -> str:
        """``name`` if registered, else the error listing the valid names (nothing is imported)."""
        if name not in self._entries:
            raise self._error(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}")
        return name
