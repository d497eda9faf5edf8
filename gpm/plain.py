"""``Plain``: the base of the small record classes on ``gpm sample``'s path.

A dataclass compiles its generated ``__init__``, ``__repr__`` and ``__eq__``
when its module is imported, ~0.4 ms a class; `gpm sample` runs from cron
every minute and imported a dozen of them, which was most of what gpm itself
added to a cold sample beyond Click and NVML. These classes write their
``__init__`` by hand, declare ``__slots__``, and get equality and a readable
repr from here.
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
