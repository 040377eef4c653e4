"""The registry: pass classes, combinator classes and named pipelines, by name.

Built explicitly by whoever runs pipelines (the compile flow builds the built-in one); nothing
registers itself on import, and this layer knows no built-in pass. A registry a user builds is a
peer of the built-in one.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from trtcompile.errors import InputError
from trtcompile.pm.base import Pass
from trtcompile.pm.pipeline import Combinator, FixedPoint


class PassRegistry:
    """Maps pipeline names to pass classes, combinator classes and named pipelines.

    ``passes`` are :class:`~trtcompile.pm.base.Pass` subclasses; ``combinators`` are
    :class:`~trtcompile.pm.pipeline.Combinator` subclasses (``fixed-point`` unless told otherwise);
    ``pipelines`` maps a name to pipeline text that name stands for. The three share one namespace:
    a name is registered once. Iterating a registry yields its pass classes.
    """

    def __init__(self, passes: Iterable[type[Pass]] = (), *,
                 combinators: Iterable[type[Combinator]] = (FixedPoint,),
                 pipelines: Mapping[str, str] | None = None):
        self._passes: dict[str, type[Pass]] = {}
        self._combinators: dict[str, type[Combinator]] = {}
        self._pipelines: dict[str, str] = {}
        for cls in combinators:
            self.register_combinator(cls)
        for cls in passes:
            self.register(cls)
        for name, text in (pipelines or {}).items():
            self.register_pipeline(name, text)

    # Registration ----------------------------------------------------------------------------

    def register(self, cls: type[Pass]) -> type[Pass]:
        """Add a pass class. Its ``name`` must be kebab-case and not yet taken."""
        if not (isinstance(cls, type) and issubclass(cls, Pass)):
            raise TypeError(f"{cls!r} is not a Pass subclass")
        self._check_name(cls, "pass", self._passes)
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"pass {cls.__name__} must be a dataclass (its fields are its options)")
        self._passes[cls.name] = cls
        return cls

    def register_combinator(self, cls: type[Combinator]) -> type[Combinator]:
        """Add a combinator class (its ``name`` then parses as ``name{options}(pipeline)``)."""
        if not (isinstance(cls, type) and issubclass(cls, Combinator)):
            raise TypeError(f"{cls!r} is not a Combinator subclass")
        self._check_name(cls, "combinator", self._combinators)
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"combinator {cls.__name__} must be a dataclass "
                            "(its fields are its options)")
        self._combinators[cls.name] = cls
        return cls

    def register_pipeline(self, name: str, text: str) -> None:
        """Make ``name`` stand for the pipeline ``text`` (parsed where it is used, so it may name
        passes registered later)."""
        if self._pipelines.get(name) == text:
            return
        self._check_free(name, f"named pipeline '{name}'")
        self._pipelines[name] = text

    def _check_name(self, cls: type, kind: str, own: dict[str, type]) -> None:
        name = cls.name
        if not name or name != name.lower() or " " in name or "_" in name:
            raise ValueError(f"{kind} {cls.__name__} needs a kebab-case 'name', got {name!r}")
        if own.get(name) is cls:
            return
        self._check_free(name, f"{kind} {cls.__module__}.{cls.__name__}")

    def _check_free(self, name: str, what: str) -> None:
        taken = self._passes.get(name) or self._combinators.get(name)
        if taken is not None:
            raise ValueError(f"{'pass' if name in self._passes else 'combinator'} name '{name}' is "
                             f"already registered by {taken.__module__}.{taken.__name__}")
        if name in self._pipelines:
            raise ValueError(f"name '{name}' is already a named pipeline; {what} cannot take it")

    # Lookup ----------------------------------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        """Whether ``name`` is a registered pass."""
        return name in self._passes

    def __getitem__(self, name: str) -> type[Pass]:
        return self._passes[name]

    def __iter__(self) -> Iterator[type[Pass]]:
        return iter(self._passes.values())

    def names(self) -> list[str]:
        """Names of the registered passes, in registration order."""
        return list(self._passes)

    def combinator(self, name: str) -> type[Combinator] | None:
        """The combinator class registered as ``name``, or None."""
        return self._combinators.get(name)

    def combinators(self) -> list[type[Combinator]]:
        """The registered combinator classes, in registration order."""
        return list(self._combinators.values())

    def pipelines(self) -> dict[str, str]:
        """Named pipelines: name to pipeline text."""
        return dict(self._pipelines)

    def copy(self) -> PassRegistry:
        """A new registry holding the same passes, combinators and named pipelines (registering
        into it leaves this one alone)."""
        return PassRegistry(self._passes.values(), combinators=self._combinators.values(),
                            pipelines=self._pipelines)

    # A user's module -------------------------------------------------------------------------

    def load_module(self, path: str | Path) -> list[type[Pass | Combinator]]:
        """Import a user's Python file and register its passes (and combinators).

        The module's ``PASSES`` list is used when present (pass and combinator classes); otherwise
        every :class:`Pass` or :class:`Combinator` subclass defined in the module (not imported
        into it) with a ``name``. A name already registered raises ValueError.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"pass module not found: {path}")
        module_name = f"trtcompile_user_passes_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise InputError(f"pass module is not a Python file: {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)  # user code: its exceptions are theirs, keep the traceback
        except SyntaxError as exc:  # the file is not Python: nothing of it ran, one line says where
            sys.modules.pop(module_name, None)
            where = exc.filename if exc.filename and Path(exc.filename) != path else ""
            where += f"{' ' if where else ''}line {exc.lineno}" if exc.lineno else ""
            raise InputError(f"pass module {path} is not valid Python: {exc.msg}"
                             f"{f' ({where})' if where else ''}") from None
        found = getattr(module, "PASSES", None)
        if found is None:
            found = [
                obj for obj in vars(module).values()
                if isinstance(obj, type) and issubclass(obj, (Pass, Combinator))
                and obj not in (Pass, Combinator) and obj.__module__ == module.__name__
                and obj.name
            ]
        if not found:
            raise InputError(f"pass module {path} defines no Pass subclass with a name")
        for cls in found:
            if isinstance(cls, type) and issubclass(cls, Combinator):
                self.register_combinator(cls)
            else:
                self.register(cls)
        return list(found)
