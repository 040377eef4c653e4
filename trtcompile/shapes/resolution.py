"""Choosing a compile's optimization profiles: :class:`ShapeOptions` (the sources a user gives),
:func:`resolve_profiles` (one source, checked against the model) and the :class:`ProfilePlan` it
returns (profiles, where they came from, the shapes parity runs at)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from trtcompile.errors import InputError
from trtcompile.shapes.parsing import load_profiles_file, profiles_from_flags
from trtcompile.shapes.profiles import (
    check_profiles,
    check_shape_sets,
    default_profile,
    derive_profiles,
    describe_profiles,
    distinct,
    parity_shape_sets,
)
from trtcompile.shapes.signature import (
    DEFAULT_BATCH,
    DEFAULT_STRATEGY,
    PROFILE_FLAGS,
    REPRESENTATIVE_FLAG,
    STRATEGIES,
    Profile,
    ShapeSet,
    model_inputs,
)


@dataclass(frozen=True)
class ShapeOptions:
    """How a compile chooses its optimization profiles (the CLI's shape flags).

    At most one source: explicit ``profiles`` (or the min/opt/max groups, or a ``profiles_file``),
    or ``representative_shapes`` with a ``strategy``. With none, the default profile applies.
    """

    #: ``--min-shapes``/``--opt-shapes``/``--max-shapes``: the k-th entry of each forms profile k.
    min_shapes: Sequence[Mapping[str, Sequence[int]]] = ()
    opt_shapes: Sequence[Mapping[str, Sequence[int]]] = ()
    max_shapes: Sequence[Mapping[str, Sequence[int]]] = ()
    #: Profiles given directly (Python API): ``[{input: (min, opt, max)}]``.
    profiles: Sequence[Mapping[str, Sequence[Sequence[int]]]] = ()
    #: TOML or JSON profile file (``--profiles``).
    profiles_file: str | Path | None = None
    #: ``range``, ``optimal`` or ``range+optimal`` (None: ``range`` when representative shapes
    #: are given).
    strategy: str | None = None
    #: Representative input shape sets the strategy derives profiles from.
    representative_shapes: Sequence[Mapping[str, Sequence[int]]] = ()

    def sources(self) -> list[str]:
        """The profile sources given, as flags."""
        given = []
        if self.min_shapes or self.opt_shapes or self.max_shapes:
            given.append(PROFILE_FLAGS)
        if self.profiles:
            given.append("profiles")
        if self.profiles_file is not None:
            given.append("--profiles")
        if self.strategy is not None or self.representative_shapes:
            given.append("--profile-strategy/--representative-shapes")
        return given


@dataclass
class ProfilePlan:
    """The optimization profiles a compile uses and the shapes parity checks."""

    #: The profiles for the engine (empty when every input is static).
    profiles: list[Profile]
    #: Where they came from: ``static``, ``default``, ``flags``, ``api``, ``file``, or
    #: ``strategy:<name>``.
    source: str
    #: One line for the terminal: which profile(s) and why.
    description: str
    #: Input shape sets parity runs at: min, opt and max of every profile, distinct, in order
    #: (the static shapes when there is no profile).
    parity_shapes: list[ShapeSet] = field(default_factory=list)
    #: Dynamic inputs as the model declares them (``[N, 3, 224, 224]``, None for unnamed dims).
    dynamic_inputs: dict[str, list[int | str | None] | None] = field(default_factory=dict)

    def backend_profiles(self) -> list[dict[str, tuple[list[int], list[int], list[int]]]] | None:
        """The profiles in :func:`trtcompile.backend.build_engine`'s form (None: no profile)."""
        if not self.profiles:
            return None
        return [{name: tuple(list(s) for s in shapes) for name, shapes in profile.items()}
                for profile in self.profiles]  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "description": self.description,
            "dynamic_inputs": self.dynamic_inputs,
            "profiles": [{name: {"min": list(low), "opt": list(opt), "max": list(high)}
                          for name, (low, opt, high) in profile.items()}
                         for profile in self.profiles],
            "parity_shapes": [{name: list(shape) for name, shape in shapes.items()}
                              for shapes in self.parity_shapes],
        }


def _normalize(profiles: Sequence[Mapping[str, Sequence[Sequence[int]]]], origin: str) -> list[Profile]:
    normalized = []
    for index, profile in enumerate(profiles):
        entry: Profile = {}
        for name, shapes in profile.items():
            try:
                low, opt, high = (tuple(int(d) for d in shape) for shape in shapes)
            except (TypeError, ValueError):
                raise InputError(f"{origin}, profile {index}, input '{name}': expected three shapes "
                                 f"(min, opt, max) of integers, got {shapes!r}") from None
            entry[name] = (low, opt, high)
        normalized.append(entry)
    return normalized


def resolve_profiles(model: onnx.ModelProto, options: ShapeOptions | None = None) -> ProfilePlan:
    """The optimization profiles for ``model`` under ``options``, checked against its inputs.

    Raises InputError (one line naming the input and the flag) for anything that does not fit.
    """
    options = options or ShapeOptions()
    inputs = model_inputs(model)
    dynamic = {s.name: (list(s.dims) if s.dims is not None else None)
               for s in inputs.values() if s.is_dynamic}
    sources = options.sources()
    if len(sources) > 1:
        raise InputError(f"give optimization profiles one way, not with {' and '.join(sources)}")
    if options.profiles_file is not None:
        profiles = load_profiles_file(options.profiles_file)
        source, origin = "file", f"--profiles {Path(options.profiles_file).name}"
    elif options.profiles:
        profiles = _normalize(options.profiles, "profiles")
        source, origin = "api", "profiles"
    elif options.min_shapes or options.opt_shapes or options.max_shapes:
        profiles = profiles_from_flags(options.min_shapes, options.opt_shapes, options.max_shapes)
        source, origin = "flags", PROFILE_FLAGS
    elif options.strategy is not None or options.representative_shapes:
        strategy = (options.strategy or DEFAULT_STRATEGY).lower()
        if strategy not in STRATEGIES:
            raise InputError(f"--profile-strategy {options.strategy}: expected one of "
                             f"{', '.join(STRATEGIES)}")
        if not options.representative_shapes:
            raise InputError(f"--profile-strategy {strategy} needs {REPRESENTATIVE_FLAG} (the input "
                             "shapes to derive profiles from)")
        check_shape_sets(options.representative_shapes, inputs, REPRESENTATIVE_FLAG)
        profiles = derive_profiles(strategy, options.representative_shapes)
        count = len(distinct(options.representative_shapes))
        source, origin = f"strategy:{strategy}", f"--profile-strategy {strategy}"
        check_profiles(profiles, inputs, origin)
        return ProfilePlan(
            profiles=profiles, source=source,
            description=(f"{len(profiles)} profile{'s' if len(profiles) != 1 else ''} by strategy "
                         f"{strategy} from {count} representative shape set"
                         f"{'s' if count != 1 else ''}: {describe_profiles(profiles)}"),
            parity_shapes=parity_shape_sets(profiles, inputs), dynamic_inputs=dynamic)
    else:
        if not dynamic:
            static = {s.name: s.static_shape() for s in inputs.values()}
            return ProfilePlan(profiles=[], source="static",
                               description="static input shapes: no optimization profile needed",
                               parity_shapes=[static] if static else [], dynamic_inputs={})
        profile = default_profile(inputs)
        return ProfilePlan(
            profiles=[profile], source="default",
            description=(f"default profile (unknown batch dimension set to {DEFAULT_BATCH}): "
                         f"{describe_profiles([profile])}; set shapes with {PROFILE_FLAGS}"),
            parity_shapes=parity_shape_sets([profile], inputs), dynamic_inputs=dynamic)
    check_profiles(profiles, inputs, origin)
    label = {"file": origin, "api": "given", "flags": "from " + PROFILE_FLAGS}[source]
    description = (f"{len(profiles)} profile{'s' if len(profiles) != 1 else ''} {label}: "
                   f"{describe_profiles(profiles)}")
    if not dynamic:
        # Shapes for static inputs are accepted when they agree; the engine needs no profile.
        static = {s.name: s.static_shape() for s in inputs.values()}
        return ProfilePlan(profiles=[], source="static",
                           description=f"static input shapes (the {origin} shapes agree): no "
                                       "optimization profile needed",
                           parity_shapes=[static], dynamic_inputs={})
    return ProfilePlan(profiles=profiles, source=source, description=description,
                       parity_shapes=parity_shape_sets(profiles, inputs), dynamic_inputs=dynamic)
