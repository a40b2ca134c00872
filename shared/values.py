"""``value_class``: the frozen dataclass of a per-record value, without the frozen
``__init__``'s cost.

A frozen dataclass's ``__init__`` sets every field through ``object.__setattr__``,
because its own ``__setattr__`` refuses: 1.1 µs for eight fields on CPython 3.11,
against 0.25 µs for the same class not frozen. The services build such values for
every record they touch (a bundle's items, every watcher, slot and engagement they
decode, every ``replace`` of a state), and in identity_match that was about a tenth of
its busy samples (docs/benchmarks.md, "Values built for every record").

``@value_class(frozen=True, slots=True)`` is, for the type checker, exactly
``@dataclass(frozen=True, slots=True)``: mypy refuses an assignment to a field of a
typed value. At run time the class is a slotted dataclass that is not frozen, with
the same ``__eq__``, and the ``__hash__`` a frozen one would have. What is given up is
the run-time refusal: an assignment mypy cannot see (through a value typed ``Any``,
``setattr`` or ``object.__setattr__``) is no longer an error. The rules never assign
to a value; they build a new one (``dataclasses.replace``).

Use it for values built per record. Configuration and other values built once (the
settings, the topic registry) stay plain frozen dataclasses: the check costs nothing
there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dataclasses import dataclass as value_class
else:

    def value_class(cls: Any = None, /, *, frozen: bool = False, **options: Any) -> Any:
        """``dataclass(**options)``, hashed by its fields as a frozen one would be when
        ``frozen`` (and ``eq``, the default); bare ``@value_class`` works too."""
        hashed = frozen and options.get("eq", True)
        make = dataclass(unsafe_hash=hashed or options.pop("unsafe_hash", False), **options)
        return make if cls is None else make(cls)


__all__ = ["value_class"]
