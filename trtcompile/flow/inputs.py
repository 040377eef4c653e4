"""The inputs a compile's checks run the model on: the user's, or generated for every input type.

Parity, engine parity, calibration and the partition stage run the model. Given inputs
(``CompileOptions.inputs``: an ``.npz`` of one array per model input, the CLI's ``--inputs``) are
used as they are (:func:`load_inputs`); otherwise :func:`feed_data` generates one seeded batch
for every element type ONNX has a NumPy type for:

* floating point: the parity distribution (standard normal, or ``--data-range``), drawn from
  ``numpy.random.default_rng(seed)`` input by input, as :func:`trtcompile.verify.feed_data` does;
* integers and booleans: Polygraphy's data loader (0 and 1: valid indices, masks and counts), except
  integers read as the indices of a ``Gather``/``GatherElements`` whose data has a known size on
  that axis, which are drawn uniformly from every valid index ``[0, size)``;
* strings (NumPy unicode arrays, as Polygraphy and ONNX Runtime take them): numbers written as text (what ``tf.strings.to_number`` reads), or, when the input is
  looked up in a table (``CategoryMapper``, ``LabelEncoder``), the table's own keys.

An input of any other type (complex numbers, 4-bit integers, FP8...) cannot be generated: the error
names it and asks for ``--inputs`` (an :class:`~trtcompile.errors.InputError`, exit 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtcompile.errors import InputError

#: Ops whose input is passed on unchanged in value (only in type or shape): an index read through
#: them is still an index, a string still a key.
_VALUE_PRESERVING = frozenset({"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten",
                               "Expand", "Transpose"})
#: Ops reading indices, with the input holding them and the attribute naming the axis.
_INDEX_READERS = {"Gather": (1, "axis", 0), "GatherElements": (1, "axis", 0)}
#: ai.onnx.ml ops looking strings up in a table, with the attribute holding the keys.
_TABLE_LOOKUPS = {"CategoryMapper": "cats_strings", "LabelEncoder": "keys_strings"}

#: Element types :func:`feed_data` generates (everything else needs given inputs).
_GENERATED_KINDS = "fiub"


def _flag() -> str:
    return "--inputs data.npz"


def input_values(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The model's inputs that are not initializers, in order."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def input_dtype(value: onnx.ValueInfoProto) -> np.dtype | None:
    """The NumPy type of an input (``object`` for strings); None when NumPy has none."""
    elem_type = value.type.tensor_type.elem_type
    if elem_type == onnx.TensorProto.STRING:
        return np.dtype(object)
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return None


def _type_name(value: onnx.ValueInfoProto) -> str:
    elem_type = value.type.tensor_type.elem_type
    try:
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"element type {elem_type}"


def _input_shape(value: onnx.ValueInfoProto, input_shapes: Mapping[str, Sequence[int]] | None
                 ) -> list[int]:
    if input_shapes and value.name in input_shapes:
        return [int(d) for d in input_shapes[value.name]]
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
            for d in value.type.tensor_type.shape.dim]


# --------------------------------------------------------------------------------------------
# What the graph says about an input's valid values
# --------------------------------------------------------------------------------------------


def _readers(model: onnx.ModelProto, name: str) -> list[tuple[onnx.NodeProto, int]]:
    """(node, input position) of every top-level node reading ``name``, following value-preserving
    ops."""
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for position, tensor in enumerate(node.input):
            consumers.setdefault(tensor, []).append((node, position))
    found, stack, seen = [], [name], {name}
    while stack:
        tensor = stack.pop()
        for node, position in consumers.get(tensor, []):
            if node.op_type in _VALUE_PRESERVING and position == 0 and node.domain in ("", "ai.onnx"):
                for output in node.output:
                    if output not in seen:
                        seen.add(output)
                        stack.append(output)
            else:
                found.append((node, position))
    return found


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Known shapes of initializers and of tensors ONNX shape inference fixes."""
    shapes = {tensor.name: list(tensor.dims) for tensor in model.graph.initializer}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - best effort: initializer shapes remain
        return shapes
    for value in list(inferred.graph.value_info) + list(inferred.graph.input):
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes.setdefault(value.name, [d.dim_value for d in dims])
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    shapes.setdefault(node.output[0], list(attr.t.dims))
    return shapes


def index_bound(model: onnx.ModelProto, name: str, shapes: Mapping[str, list[int]] | None = None
                ) -> int | None:
    """The number of valid values of integer input ``name`` when it is read as indices
    (``Gather`` on an axis of known size): indices are then drawn from ``[0, bound)``. None when
    no reader bounds it (the smallest bound wins when several do)."""
    bounds = []
    for node, position in _readers(model, name):
        reader = _INDEX_READERS.get(node.op_type)
        if reader is None or position != reader[0] or node.domain not in ("", "ai.onnx"):
            continue
        if shapes is None:
            shapes = _static_shapes(model)
        data_shape = shapes.get(node.input[0])
        if not data_shape:
            continue
        axis = next((attr.i for attr in node.attribute if attr.name == reader[1]), reader[2])
        axis = axis + len(data_shape) if axis < 0 else axis
        if 0 <= axis < len(data_shape) and data_shape[axis] > 0:
            bounds.append(int(data_shape[axis]))
    return min(bounds) if bounds else None


def string_keys(model: onnx.ModelProto, name: str) -> list[str]:
    """The keys of the table string input ``name`` is looked up in, if it is (else empty)."""
    keys: list[str] = []
    for node, position in _readers(model, name):
        attribute = _TABLE_LOOKUPS.get(node.op_type)
        if attribute is None or position != 0:
            continue
        for attr in node.attribute:
            if attr.name == attribute:
                keys += [s.decode("utf-8", errors="replace") for s in attr.strings]
    return list(dict.fromkeys(keys))


# --------------------------------------------------------------------------------------------
# Generated inputs
# --------------------------------------------------------------------------------------------


def feed_data(model: onnx.ModelProto, seed: int = 0,
              input_shapes: Mapping[str, Sequence[int]] | None = None,
              distribution: Any = None) -> dict[str, np.ndarray]:
    """One seeded batch of valid inputs for ``model``, for every input type (see the module
    docstring); the drop-in for :func:`trtcompile.verify.feed_data`, whose values it keeps for
    floating-point, integer and boolean inputs no index reader bounds. Raises InputError naming
    an input whose type cannot be generated."""
    from polygraphy.common import TensorMetadata
    from polygraphy.comparator import DataLoader

    from trtcompile import verify

    distribution = distribution or verify.DEFAULT_DISTRIBUTION
    values = input_values(model)
    shapes = {value.name: _input_shape(value, input_shapes) for value in values}
    dtypes = {value.name: input_dtype(value) for value in values}
    for value in values:
        dtype = dtypes[value.name]
        if dtype is None or (dtype.kind not in _GENERATED_KINDS and dtype != np.dtype(object)):
            raise InputError(f"input '{value.name}' is {_type_name(value)}, which the checks cannot "
                             f"generate values of: give them with {_flag()}")
    metadata = TensorMetadata()
    for value in values:
        if dtypes[value.name].kind in _GENERATED_KINDS:
            metadata.add(value.name, dtypes[value.name], shapes[value.name])
    feeds: dict[str, np.ndarray] = {}
    if len(metadata):
        try:
            with verify.quiet_polygraphy():
                loader = DataLoader(seed=seed, iterations=1, input_metadata=metadata)
                feeds = dict(loader[0])
        except Exception as exc:  # noqa: BLE001 - Polygraphy refusing a type is the finding
            first = next(iter(metadata))
            raise InputError(f"inputs of this model cannot be generated ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); give them with "
                             f"{_flag()} (first input: '{first}')") from None
    rng = np.random.default_rng(seed)
    static_shapes = None
    ordered: dict[str, np.ndarray] = {}
    for value in values:
        name, dtype = value.name, dtypes[value.name]
        if dtype == np.dtype(object):
            ordered[name] = _strings(model, name, shapes[name], np.random.default_rng(seed))
            continue
        array = feeds[name]
        if np.asarray(array).dtype.kind == "f":
            array = distribution.draw(rng, np.shape(array), np.asarray(array).dtype)
        elif dtype.kind in "iu":
            if static_shapes is None:
                static_shapes = _static_shapes(model)
            bound = index_bound(model, name, static_shapes)
            if bound is not None:
                draw = np.random.default_rng([seed, len(ordered)])
                array = draw.integers(0, bound, size=np.shape(array)).astype(dtype)
        ordered[name] = np.asarray(array)
    return ordered


def _strings(model: onnx.ModelProto, name: str, shape: Sequence[int],
             rng: np.random.Generator) -> np.ndarray:
    """Strings for input ``name``: the keys of the table it is looked up in, else numbers."""
    keys = string_keys(model, name)
    count = int(np.prod(shape)) if shape else 1
    if keys:
        picked = [keys[i] for i in rng.integers(0, len(keys), size=count)]
    else:
        picked = [f"{v:.4f}" for v in rng.standard_normal(count)]
    return np.array(picked, dtype=str).reshape(tuple(shape))


# --------------------------------------------------------------------------------------------
# Given inputs
# --------------------------------------------------------------------------------------------


def load_inputs(path: str | Path, model: onnx.ModelProto,
                aliases: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """The inputs in the ``.npz`` at ``path``, one array per model input (by ONNX name, or by an
    alias such as a TensorFlow signature key), as ONNX Runtime takes them: strings as NumPy
    unicode arrays, numbers in the input's own type. InputError naming the first problem."""
    path = Path(path)
    where = f"--inputs {path}"
    if not path.is_file():
        raise InputError(f"{where}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as exc:  # object arrays need pickle, which a data file must not run
        raise InputError(f"{where}: {exc}; save strings as NumPy string arrays "
                         "(np.array([...], dtype=str))") from None
    except OSError as exc:
        raise InputError(f"{where}: not a NumPy .npz archive ({exc})") from None
    aliases = dict(aliases or {})
    arrays = {aliases.get(key, key): value for key, value in arrays.items()}
    values = input_values(model)
    names = [value.name for value in values]
    missing = [name for name in names if name not in arrays]
    unknown = sorted(set(arrays) - set(names))
    if missing or unknown:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
            ([f"unknown {', '.join(unknown)}"] if unknown else [])
        raise InputError(f"{where} does not match the model's inputs ({'; '.join(parts)}); the "
                         f"inputs are: {', '.join(names)}")
    given = {}
    for value in values:
        array, dtype = arrays[value.name], input_dtype(value)
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and array.ndim != len(dims):
            raise InputError(f"{where}: '{value.name}' has rank {array.ndim}, the model's input "
                             f"rank {len(dims)}")
        for axis, (have, dim) in enumerate(zip(array.shape, dims)):
            if dim.HasField("dim_value") and dim.dim_value > 0 and have != dim.dim_value:
                raise InputError(f"{where}: '{value.name}' has shape {list(array.shape)}, the "
                                 f"model's input has {dim.dim_value} on axis {axis}")
        if dtype == np.dtype(object):
            if array.dtype.kind not in "USO":
                raise InputError(f"{where}: '{value.name}' is {array.dtype}, the model's input is "
                                 "a string tensor: save it as strings")
            given[value.name] = array.astype(str)
        elif dtype is None or array.dtype != dtype:
            raise InputError(f"{where}: '{value.name}' is {array.dtype}, the model's input is "
                             f"{_type_name(value)}: save it as {dtype if dtype is not None else 'that type'}")
        else:
            given[value.name] = array
    return given


def compile_inputs(loaded: Any, options: Any) -> dict[str, np.ndarray] | None:
    """The inputs ``options.inputs`` gives for ``loaded`` (its TensorFlow signature keys are
    accepted as names), or None when none are given."""
    if not getattr(options, "inputs", None):
        return None
    aliases = {b.feed_key: b.onnx_name for b in getattr(loaded.reference, "inputs", [])}
    given = load_inputs(options.inputs, loaded.model, aliases)
    for binding in getattr(loaded.reference, "inputs", []):
        array = given.get(binding.onnx_name)
        if binding.nchw and array is not None and array.ndim == 4:
            given[binding.onnx_name] = np.transpose(array, (0, 3, 1, 2))  # saved as TensorFlow takes it
    return given


def feeds_for(loaded: Any, options: Any, input_shapes: Mapping[str, Sequence[int]] | None = None,
              given: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The batch a check runs ``loaded`` on at ``input_shapes``: the given inputs when their
    shapes are those (or no shapes are asked for), else a generated batch."""
    from trtcompile.flow.options import input_distribution

    if given is not None and (not input_shapes or all(
            list(np.shape(given[name])) == [int(d) for d in shape]
            for name, shape in input_shapes.items() if name in given)):
        return dict(given)
    shapes = input_shapes or dict(options.frontend.input_shapes) or None
    return feed_data(loaded.model, seed=options.seed, input_shapes=shapes,
                     distribution=input_distribution(options))


def has_strings(feeds: Mapping[str, np.ndarray]) -> bool:
    """True when a feed is a string array (Polygraphy's ONNX Runtime runner refuses them)."""
    return any(np.asarray(value).dtype.kind in "USO" for value in feeds.values())


def run_model(model: onnx.ModelProto,
              feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]], name: str):
    """:func:`trtcompile.verify.run_model` for feeds of every type (one batch, or one iteration
    per batch of a sequence, in one session): Polygraphy's runner, or, for string feeds (which
    it refuses unless empty), ONNX Runtime directly, the outputs in the same Polygraphy
    ``RunResults`` form. Raises :class:`~trtcompile.verify.ModelRunError` naming ``name`` when
    ONNX Runtime cannot load or run the model."""
    from trtcompile import verify

    batches = [feeds] if isinstance(feeds, Mapping) else list(feeds)
    if not any(has_strings(batch) for batch in batches):
        return verify.run_model(model, batches, name)
    from polygraphy.comparator import IterationResult, RunResults

    iterations = []
    try:
        session = verify.inference_session(model)
        names = [output.name for output in session.get_outputs()]
        for batch in batches:
            values = session.run(names, {key: np.asarray(value) for key, value in batch.items()})
            iterations.append(IterationResult(dict(zip(names, values)), runner_name=name))
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors share no base class
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise verify.ModelRunError(name, text[-300:],
                                   {k: np.shape(v) for k, v in batches[0].items()}) from None
    return RunResults([(name, iterations)])


__all__ = ["compile_inputs", "feed_data", "feeds_for", "has_strings", "index_bound",
           "input_dtype", "input_values", "load_inputs", "run_model", "string_keys"]


def overridable_feeds(model: onnx.ModelProto, seed: int = 0, *,
                      defaults: bool = False) -> dict[str, np.ndarray]:
    """A value for each overridable initializer of ``model`` (a graph input that is also an
    initializer), of its default's shape and dtype and different from it in every element, drawn
    with ``seed``: floating point moved by at least half its magnitude (at least 0.5), integers by
    one (towards zero where they can), booleans negated, strings extended. With ``defaults``, the
    defaults themselves."""
    from trtcompile import ir

    names = set(ir.overridable_initializer_names(model))
    rng = np.random.default_rng(seed)
    drawn: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        if init.name not in names:
            continue
        default = onnx.numpy_helper.to_array(init)
        if defaults:
            drawn[init.name] = default
        elif default.dtype.kind == "f":
            magnitude = np.maximum(np.abs(default.astype(np.float64)), 1.0)
            step = rng.uniform(0.5, 1.5, default.shape) * rng.choice([-1.0, 1.0], default.shape)
            drawn[init.name] = np.asarray(default + step * magnitude, dtype=default.dtype)
        elif default.dtype.kind in "iu":
            lowest = np.iinfo(default.dtype).min
            step = np.where(default > max(lowest, 0), -1, 1)
            drawn[init.name] = np.asarray(default + step, dtype=default.dtype)
        elif default.dtype.kind == "b":
            drawn[init.name] = np.asarray(np.logical_not(default))
        else:
            drawn[init.name] = np.asarray(np.char.add(default.astype(str), "_"), dtype=object)
    return drawn


def feedable(model: onnx.ModelProto, names) -> onnx.ModelProto:
    """``model`` with the overridable initializers among ``names`` as plain inputs (a copy; the
    model itself when there are none). ONNX Runtime does not list an overridable initializer
    among a session's inputs, so a runner that feeds what the session lists would leave it at
    its default; an initializer that is not an input (a default baked in) stays one."""
    names = set(names)
    inputs = {value.name for value in model.graph.input}
    if not any(init.name in names and init.name in inputs for init in model.graph.initializer):
        return model
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    kept = [init for init in copied.graph.initializer
            if not (init.name in names and init.name in inputs)]
    del copied.graph.initializer[:]
    copied.graph.initializer.extend(kept)
    return copied
