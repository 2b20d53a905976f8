"""One registry type for corpora, encoders and methods (timm-style ``register`` + ``create``)."""
from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

from pipeline.errors import UnknownName

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a name to a class or builder. Entries register themselves with a decorator.

    >>> CORPORA = Registry("corpus")
    >>> @CORPORA.register("meld")
    ... class MeldReader: ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownName(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
