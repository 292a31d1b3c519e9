"""One registry of named things (run kinds, recipes, methods): registered once by name, looked
up, listed, and removed again (a plugin's test undoing its registration)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Things of one sort by name, in order of registration.

    Args:
        what: how messages call one ("run kind").
        error: the exception an unknown name raises.
        hint: what follows the list of known names in that message.
    """

    def __init__(self, what: str, error: type[Exception] = ValueError, hint: str = "") -> None:
        self.what, self.error, self.hint = what, error, hint
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        """Registers ``item`` as ``name`` (a name may be registered once)."""
        if name in self._items:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Removes ``name`` (nothing happens if it is not registered)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        """The item registered as ``name``; raises ``error`` naming the known ones otherwise."""
        if name not in self._items:
            known = ", ".join(sorted(self._items))
            raise self.error(f"unknown {self.what} {name!r}; {self.hint or 'choose one of'} {known}")
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items.values()))
