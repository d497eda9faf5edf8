"""``Plain``: a slotted record with equality and a readable repr.

Only ``gpm.classify.facts`` still uses it (issue #14.3: every other record is
a dataclass); it goes when that module moves to psutil and dataclasses.
"""

from __future__ import annotations


class Plain:
    __slots__ = ()

    def _fields(self) -> tuple[str, ...]:
        return tuple(name for cls in reversed(type(self).__mro__) for name in getattr(cls, "__slots__", ()))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self._fields())

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass with eq

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields())
        return f"{type(self).__name__}({fields})"
