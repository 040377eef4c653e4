"""precision-fp16: weights and compute in float16 (or bfloat16), float32 only at the boundary
and on a keep-list."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.precision_fp16 import measure
from passes.precision_fp16.casts import FLOAT, FLOAT16, merge_cast_chains
from passes.precision_fp16.half import HALF_TYPES, Half
from passes.precision_fp16.types import (
    infer_function_types,
    infer_types,
    schema_slots,
    slot_allows,
)
from trtcompile import ir
from trtcompile.errors import UnsupportedPrecision
from trtcompile.pm import Pass, PassContext, PassResult


#: Ops kept in float32 by default: they accumulate many terms or exponentiate, where float16's
#: 11-bit mantissa and 65504 range lose accuracy or overflow.
DEFAULT_KEEP_OPS = (
    "Softmax", "LogSoftmax", "CumSum",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceProd",
    "LayerNormalization", "InstanceNormalization", "GroupNormalization", "LpNormalization",
    "MeanVarianceNormalization",
)

#: The ops a fused layer (a local function) is built around: a call whose op among these has no
#: 16-bit form at the model's opset (bfloat16 Conv before opset 22) stays float32 as a whole.
_FUSED_COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})

#: ``keep``: ``static`` (the rules alone), ``auto`` (also by measuring the data), ``default``
#: (``auto`` when the context holds data, else ``static``).
KEEP_MODES = ("default", "static", "auto")

_FLOAT_TYPES = {FLOAT16, FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}

#: The ``data_max`` of ``keep=auto`` (rule 5) unless the option is given.
DEFAULT_DATA_MAX = 512.0


@dataclass(frozen=True)
class PrecisionFp16(Pass):
    """Convert float32 compute and weights to float16, keeping float32 where half precision fails.

    TensorRT 11 and TensorRT-RTX take no precision flag: layers run in Half when the graph says so.

    Rules:
      1. Every top-level layer that computes on float32 tensors becomes float16 (its float32
         weights are stored as float16, ``Cast``/``Constant``/``ConstantOfShape`` attributes follow)
         unless it is kept in float32 because: its op is on the keep-list (``DEFAULT_KEEP_OPS``:
         softmax, accumulating reductions, normalizations; ``keep_ops`` adds more), it is named in
         ``keep_nodes``, a float constant it reads exceeds float16's range (|w| > 65504), it is
         shape arithmetic on integers cast to float (exact only in float32), it holds subgraphs,
         its tensor types are unknown, or its op has no float16 form. Inputs an op's schema fixes
         to float32 (``Resize`` scales) stay float32.
         A float constant with a nonzero value float16 flushes to zero (|w| < 2^-25, e.g. 1e-9)
         keeps its readers float32 too: a scale or epsilon of 1e-9 must not become 0 (a value
         below 2^-11 of its tensor's largest magnitude, lost to float16 rounding anyway, does
         not count).
         Ops ONNX Runtime's CPU provider cannot run in float16 (``NO_CPU_FLOAT16_KERNEL``:
         ScatterND and ScatterElements with a reduction) stay float32: parity runs there.
         A Cast from an integer or bool tensor whose result some reader takes back to integers
         stays float32: integers (ids, positions, counts) are exact in float32 up to 2^24, in
         float16 only up to 2048, so an integer path never passes through float16.
      2. Casts are inserted only where a float16 and a float32 region meet: after float32 graph
         inputs, before float32 graph outputs (inputs and outputs keep their names and float32
         types), and around kept layers. A tensor is cast once per target type, shared by readers.
      3. Local functions are typed by their call: a float16 call gets float16 weights and a body
         converted by the same rules (float16 inputs and outputs, Casts inside only around kept
         ops). A body that needs changes becomes a new specialization ``<name>_fp16``; a body that
         is the same in both precisions is reused.
      4. Back-to-back Casts are merged when the first is exact (``float16 -> float32 -> x`` is
         ``float16 -> x``) and dropped when they cancel, so no Cast pair remains.
      5. With data (``keep=auto``; ``keep=default`` when ``ctx.resources["precision-fp16"]``
         holds samples, as ``--calib-data``/``--inputs`` give them) the keep-list is also
         measured: the FP32 model runs on ONNX Runtime on up to ``samples`` samples with every
         top-level tensor as an output. A node rule 1 would convert stays float32 when a float
         input or output reaches |x| > ``data_max`` (default 512, the ``data_max`` of NVIDIA
         Model Optimizer's AutoCast and Torch-TensorRT's autocast: 1/128 of float16's 65504,
         headroom for data the samples do not cover and for the sums and squares downstream).
         Each other converted node is measured alone (on the first 8 samples): a one-node model
         converted by these rules runs on its captured inputs rounded to float16; its error is
         the largest ``|fp16 - fp32|`` of its float16 outputs over the largest ``|fp32|``
         (infinite when float16 overflows). Then, while a float16 tensor of the converted model
         holds a NaN or an infinity where FP32 does not (the node where it starts stays
         float32) or its outputs miss the parity tolerances on the samples (FP16's, or those
         of ``ctx.resources["parity-tolerances"]``: a compile's ``--atol``/``--rtol``), the nodes of
         largest alone-error stay float32, 1, 2, 4, ... per round, for at most ``max_rounds``
         rounds; then up to 4 of the last round's, smallest error first, go back to float16 one
         at a time while the model still passes. Every node so kept has its reason
         (``--why-not``); the per-node table (range, alone-error, kept, reason) is the result's
         ``precision_risk`` table. ``keep=static`` applies rules 1-4 alone, with or without
         data; ``keep=auto`` without data is an error naming what to give.

      6. ``dtype=bfloat16`` writes bfloat16 instead of float16 by the same rules (``--precision
         bf16``): bfloat16 keeps float32's range (overflow and underflow of constants are moot)
         but 8 significant bits, so integers are exact only up to 256 and the keep-list is the
         same. An op stays float32 where its schema at the model's opset has no bfloat16 form
         (``Conv`` and the pools gain one at opset 22) or TensorRT builds none
         (``ConvTranspose`` on TensorRT-RTX 1.7); so does a fused layer (a call) built around
         such a ``Conv``, ``MatMul`` or ``Gemm``, as a whole. A model below opset 13, whose
         ``Cast`` cannot produce bfloat16, is refused (``UnsupportedPrecision``). With data,
         ``data_max`` is 1/128 of bfloat16's range unless given.

    Requires: a type-checkable graph (types from ONNX shape inference). Preserves: graph inputs and
    outputs (names, float32 types, shapes); outputs within half-precision tolerance
    (see ``trtcompile.calibration.parity_tolerances("fp16")``, ``("bf16")`` for bfloat16).
    Options: ``keep_ops`` (extra op types kept float32), ``keep_nodes`` (node names kept float32),
    ``default_keep`` (use ``DEFAULT_KEEP_OPS``), ``keep`` (``default``, ``static``, ``auto``:
    rule 5), ``data_max``, ``samples`` (at most this many are measured), ``max_rounds``, ``dtype``
    (``float16``, ``bfloat16``: rule 6).
    """

    name: ClassVar[str] = "precision-fp16"
    #: Counts of the measurement (rule 5), reported whether or not a layer may be rewritten.
    classification_counts: ClassVar[tuple[str, ...]] = measure.COUNTS

    keep_ops: tuple[str, ...] = ()
    keep_nodes: tuple[str, ...] = ()
    default_keep: bool = True
    keep: str = "default"
    data_max: float = DEFAULT_DATA_MAX
    samples: int = 32
    max_rounds: int = 8
    dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.keep not in KEEP_MODES:
            raise ValueError(f"keep={self.keep}: expected one of {', '.join(KEEP_MODES)}")
        if not (math.isfinite(self.data_max) and self.data_max > 0):
            raise ValueError(f"data-max={self.data_max}: expected a finite number > 0")
        if self.samples < 1 or self.max_rounds < 0:
            raise ValueError("samples must be at least 1 and max-rounds at least 0")
        if self.dtype not in HALF_TYPES:
            raise ValueError(f"dtype={self.dtype}: expected one of {', '.join(HALF_TYPES)}")

    @property
    def half(self) -> Half:
        """The 16-bit float type the pass writes."""
        return HALF_TYPES[self.dtype]

    @property
    def data_limit(self) -> float:
        """``data_max``; for bfloat16 (float32's range), 1/128 of its range unless a data-max
        other than the default 512 is given (the ratio 512 is of float16's 65504)."""
        if self.dtype == "float16" or self.data_max != DEFAULT_DATA_MAX:
            return self.data_max
        return self.half.max / 128

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        if ir.opset(graph) < self.half.min_opset:
            raise UnsupportedPrecision(
                f"{self.half.name} needs ONNX opset {self.half.min_opset} or later (Cast to "
                f"{self.half.name}); the model is at opset {ir.opset(graph)}: convert it to "
                f"opset {self.half.min_opset}+ or use --precision fp16")
        keep_nodes = {name: "kept float32 by option" for name in self.keep_nodes}
        data = measure.data_of(ctx)
        if self.keep == "auto" or (self.keep == "default" and data is not None):
            data = measure.require_data(ctx)
            measured = measure.measure(
                graph, data, lambda g, keep: self._convert(g, PassContext(), keep),
                user_keep=keep_nodes, data_max=self.data_limit, samples=self.samples,
                max_rounds=self.max_rounds, half=self.half,
                tolerances=measure.tolerances_of(ctx, self.half))
            result = self._convert(graph, ctx, {**keep_nodes, **measured.reasons})
            measure.finish(measured, result, self.data_limit, self.half)
            return result
        return self._convert(graph, ctx, keep_nodes)

    def _convert(self, graph: gs.Graph, ctx: PassContext, keep_nodes: dict[str, str]) -> PassResult:
        """Convert ``graph`` in place, keeping ``keep_nodes`` (name -> reason) in float32."""
        result = PassResult()
        model = ir.export_model(graph.copy())
        types = infer_types(model)
        keep_ops = set(self.keep_ops) | (set(DEFAULT_KEEP_OPS) if self.default_keep else set())
        converter = _Converter(graph, keep_ops, keep_nodes, result, ir.opset(graph),
                               {(f.domain, f.name): f for f in model.functions}, ctx, self.half)
        converter.convert(graph, types, input_fp16=[False] * len(graph.inputs),
                          output_fp16=[False] * len(graph.outputs), top_level=True)
        for body in [graph, *graph.functions]:
            merged = merge_cast_chains(body, converter.types_of(body), graph.outputs, ctx, result)
            if merged:
                result.count("merged_casts", merged)
        graph.cleanup(remove_unused_graph_inputs=False)
        ir.toposort(graph)
        return result


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """Which float32 slots of a node become 16-bit (empty: the node stays float32)."""

    inputs: set[int] = field(default_factory=set)
    outputs: set[int] = field(default_factory=set)

    @property
    def converts(self) -> bool:
        return bool(self.inputs or self.outputs)


class _Converter:
    def __init__(self, graph: gs.Graph, keep_ops: set[str], keep_nodes: dict[str, str],
                 result: PassResult, opset: int,
                 function_protos: dict[tuple[str, str], onnx.FunctionProto], ctx: PassContext,
                 half: Half):
        self.ctx = ctx
        self.half = half
        self.graph = graph
        self.keep_ops = keep_ops
        self.keep_nodes = keep_nodes
        self.result = result
        self.opset = opset
        self.scope = ir.NameScope(graph)
        self.functions = ir.functions_by_key(graph)
        self.function_protos = function_protos
        self.specialized: dict[tuple, gs.Function | None] = {}
        self._types: dict[int, dict[str, int]] = {}

    def types_of(self, body: gs.Graph) -> dict[str, int]:
        return self._types.get(id(body), {})

    # One graph or function body ---------------------------------------------------------------

    def convert(self, body: gs.Graph, types: dict[str, int], *, input_fp16: Sequence[bool],
                output_fp16: Sequence[bool], top_level: bool) -> bool:
        """Convert ``body`` in place; return whether anything changed."""
        self._types[id(body)] = types
        float32 = {name for name, elem in types.items() if elem == FLOAT}
        plans: dict[int, _Plan] = {}
        integer_bound = _integer_bound_nodes(body, float32)
        # Tensors a subgraph reads from this body: its nodes are typed for float32 (no Cast can
        # be put between), so their producers stay float32.
        outer_reads = {name for node in body.nodes for name in ir.outer_scope_reads(node)}
        constant_nodes = []
        for node in body.nodes:
            if not any(t.name in float32 for t in [*node.inputs, *node.outputs]):
                continue
            if any(t.name in float32 and t.name in outer_reads for t in node.outputs):
                if top_level:
                    self.result.reject(node, "a subgraph reads its output (the body stays "
                                       "float32)")
                plans[id(node)] = _Plan()
                continue
            if node.op == "Constant" and not node.inputs:
                constant_nodes.append(node)
                continue
            if node.op == "Cast" and ir.is_onnx_op(node) and id(node) not in integer_bound and (
                    not any(t.name in float32 for t in node.outputs)
                    or types.get(node.inputs[0].name) == self.half.elem):
                # A Cast out of float32 reads float16 as well (it is the conversion); a Cast of
                # float16 to float32 is a boundary this pass (or the model) put there. Neither
                # changes, so the pass run on its own output changes nothing.
                plans[id(node)] = _Plan()
                continue
            reason = (_SHAPE_ARITHMETIC if id(node) in integer_bound
                      else _integer_path(self.half) if _integers_back(node, types, integer_bound)
                      else self._keep_reason(node, types, float32))
            if reason is not None:
                if top_level:
                    self.result.reject(node, reason)
                plans[id(node)] = _Plan()
                continue
            plan = self._plan(node, float32)
            if plan is None or not plan.converts:
                if top_level:
                    self.result.reject(node, f"{node.op} has no {self.half.name} form at opset "
                                             f"{self.opset}")
                plans[id(node)] = _Plan()
                continue
            if top_level and not self.ctx.may_rewrite(f"convert-to-{self.half.suffix}", node,
                                                      self.result):
                plans[id(node)] = _Plan()
                continue
            plans[id(node)] = plan

        # Constant nodes follow their readers: float16 when every float32 reader wants float16.
        body_outputs = ir.output_names(body)
        for node in constant_nodes:
            wants = self._reader_wants(node.outputs[0], plans)
            value = node.attrs.get("value")
            fits = isinstance(value, gs.Constant) and self.half.fits(value.values)
            if wants == {True} and fits and node.outputs[0].name not in body_outputs:
                plans[id(node)] = _Plan(outputs={0})
            else:
                plans[id(node)] = _Plan()

        # Type of each float32 tensor after conversion.
        is_fp16: dict[str, bool] = {}
        for tensor, fp16 in zip(body.inputs, input_fp16):
            if tensor.name in float32:
                is_fp16[tensor.name] = fp16
        changed = False
        for node in body.nodes:
            plan = plans.get(id(node))
            if plan is None:
                continue
            for index, tensor in enumerate(node.outputs):
                if tensor.name in float32:
                    is_fp16[tensor.name] = index in plan.outputs
            if plan.converts:
                if top_level:
                    self.result.count("converted_layers")
                changed |= self._convert_attributes(node, plan)
                if not ir.is_onnx_op(node):
                    changed |= self._specialize_call(node, plan, types)

        rewired = self._rewire(body, plans, float32, is_fp16, output_fp16)
        for name, fp16 in is_fp16.items():
            if fp16:
                types[name] = self.half.elem
        return changed or rewired

    def _keep_reason(self, node: gs.Node, types: dict[str, int], float32: set[str]) -> str | None:
        if node.name in self.keep_nodes:
            return self.keep_nodes[node.name]
        if node.op in self.keep_ops:
            return f"{node.op} is on the float32 keep-list"
        if ir.subgraphs(node):
            return f"{node.op} holds subgraphs (their bodies stay float32)"
        for tensor in [*node.inputs, *node.outputs]:
            if tensor.name and tensor.name not in types:
                return f"type of '{tensor.name}' is unknown"
        for tensor in node.inputs:
            values = ir.constant_value(tensor)
            problem = (self.half.problem(values) if values is not None and tensor.name in float32
                       else None)
            if problem is not None:
                return f"weights {problem}"
        if node.op == "ConstantOfShape":
            value = node.attrs.get("value")
            problem = self.half.problem(value.values) if isinstance(value, gs.Constant) else None
            if problem is not None:
                return f"fill value {problem}"
        if ir.is_onnx_op(node):
            if "dtype" in node.attrs:
                return f"{node.op} sets its output type by attribute"
            for attr, values in self.half.no_cpu_kernel.get(node.op, {}).items():
                if ir.text_attr(node, attr, "none") in values:
                    return (f"ONNX Runtime's CPU provider has no {self.half.name} {node.op} with "
                            f"{attr} '{ir.text_attr(node, attr, 'none')}'")
            if node.op in self.half.no_engine_form:
                return self.half.no_engine_form[node.op]

        else:
            function = self.functions.get(ir.call_key(node))
            if function is None:
                return f"{node.op} is not a local function (no {self.half.name} form known)"
            if not all(ir.is_onnx_op(n) for n in function.nodes):
                return f"function {function.name} calls other functions"
            for inner in function.nodes:
                if inner.op in _FUSED_COMPUTE_OPS and not self._has_form(inner.op):
                    # Casts inside the layer around its convolution or matrix multiply would
                    # split what TensorRT fuses into one layer: the whole call stays float32.
                    return (f"its {inner.op} has no {self.half.name} form at opset "
                            f"{self.opset} (the fused layer stays float32 as a whole)")
        return None

    def _has_form(self, op: str) -> bool:
        """Whether the schema of ``op`` at the model's opset lets its first input be the type."""
        slots = schema_slots(op, self.opset, self.half.schema_type)
        return slots is not None and slot_allows(slots[0], slots[2], 0)

    def _plan(self, node: gs.Node, float32: set[str]) -> _Plan | None:
        plan = _Plan()
        if not ir.is_onnx_op(node):
            # Function bodies are typed by their inputs: every float32 slot follows the call.
            plan.inputs = {i for i, t in enumerate(node.inputs) if t.name in float32}
            plan.outputs = {i for i, t in enumerate(node.outputs) if t.name in float32}
            return plan
        slots = schema_slots(node.op, self.opset, self.half.schema_type)
        if slots is None:
            return None
        input_slots, output_slots, input_variadic, output_variadic = slots
        plan.inputs = {i for i, t in enumerate(node.inputs)
                       if t.name in float32 and slot_allows(input_slots, input_variadic, i)}
        plan.outputs = {i for i, t in enumerate(node.outputs)
                        if t.name in float32 and slot_allows(output_slots, output_variadic, i)}
        return plan

    @staticmethod
    def _reader_wants(tensor: gs.Tensor, plans: dict[int, _Plan]) -> set[bool]:
        wants = set()
        for reader in tensor.outputs:
            plan = plans.get(id(reader), _Plan())
            for index, t in enumerate(reader.inputs):
                if t is tensor:
                    wants.add(index in plan.inputs)
        return wants

    def _convert_attributes(self, node: gs.Node, plan: _Plan) -> bool:
        """Make type-carrying attributes produce the 16-bit type; return whether any changed."""
        if 0 not in plan.outputs:
            return False
        if node.op == "Cast" and node.attrs.get("to") == FLOAT:
            node.attrs["to"] = self.half.elem
            return True
        if node.op in ("Constant", "ConstantOfShape"):
            value = node.attrs.get("value")
            if isinstance(value, gs.Constant) and value.values.dtype == np.float32:
                node.attrs["value"] = gs.Constant(value.name,
                                                  value.values.astype(self.half.np_type))
                return True
        return False

    def _specialize_call(self, node: gs.Node, plan: _Plan, types: dict[str, int]) -> bool:
        """Point a float16 call at a function body converted for float16 inputs."""
        function = self.functions[ir.call_key(node)]
        input_types = tuple(types.get(t.name, 0) for t in node.inputs)
        key = (*ir.function_key(function), input_types,
               tuple(sorted(plan.inputs)), tuple(sorted(plan.outputs)))
        if key not in self.specialized:
            body = function.copy()
            proto = self.function_protos[ir.function_key(function)]
            body_types = infer_function_types(self.graph, proto, input_types)
            input_fp16 = [i in plan.inputs for i in range(len(body.inputs))]
            output_fp16 = [i in plan.outputs for i in range(len(body.outputs))]
            changed = self.convert(body, body_types, input_fp16=input_fp16,
                                   output_fp16=output_fp16, top_level=False)
            merge_cast_chains(body, body_types, body.outputs, self.ctx, self.result)
            body.cleanup()
            ir.toposort(body)
            if changed:
                body.name = self.scope.fresh(f"{function.name}_{self.half.suffix}")
                body = ir.add_local_function(self.graph, body)
                self.functions[ir.function_key(body)] = body
                self.result.count("specialized_functions")
                self.specialized[key] = body
            else:
                self.specialized[key] = None
        special = self.specialized[key]
        if special is None:
            return False
        node.op = special.name
        return True

    # Edges ------------------------------------------------------------------------------------

    def _rewire(self, body: gs.Graph, plans: dict[int, _Plan], float32: set[str],
                is_fp16: dict[str, bool], output_fp16: Sequence[bool]) -> bool:
        changed = False
        top_level = body is self.graph
        casts: dict[tuple[str, bool], gs.Variable] = {}
        constants: dict[str, gs.Constant] = {}

        # Body outputs whose producer computes in the other precision: the producer writes a new
        # tensor and a Cast writes the output under its own name; readers take the new tensor.
        for position, tensor in enumerate(list(body.outputs)):
            if tensor.name not in float32 or tensor.name not in is_fp16:
                continue
            producer = ir.producer(tensor)
            want = output_fp16[position]
            if producer is None or is_fp16[tensor.name] == want:
                continue
            inner = gs.Variable(self.scope.fresh(f"{tensor.name}_{self._suffix(not want)}"),
                                dtype=self._np_type(not want), shape=tensor.shape)
            ir.replace_uses(tensor, inner)
            producer.outputs[producer.outputs.index(tensor)] = inner
            is_fp16[inner.name] = not want
            float32.add(inner.name)
            cast = gs.Node("Cast", self.scope.fresh(f"{tensor.name}_cast"),
                           attrs={"to": self.half.elem if want else FLOAT}, inputs=[inner],
                           outputs=[tensor])
            body.nodes.append(cast)
            is_fp16[tensor.name] = want
            self._count_cast(top_level)
            changed = True

        for node in list(body.nodes):
            plan = plans.get(id(node))
            if plan is None:
                continue
            for index, tensor in enumerate(list(node.inputs)):
                if tensor.name not in float32:
                    continue
                want = index in plan.inputs
                if isinstance(tensor, gs.Constant):
                    if want:
                        node.inputs[index] = self._fp16_constant(tensor, constants, top_level)
                        changed = True
                    continue
                have = is_fp16.get(tensor.name, False)
                if have == want:
                    continue
                key = (tensor.name, want)
                if key not in casts:
                    cast_output = gs.Variable(
                        self.scope.fresh(f"{tensor.name}_{self._suffix(want)}"),
                        dtype=self._np_type(want),
                        shape=tensor.shape)
                    body.nodes.append(gs.Node(
                        "Cast", self.scope.fresh(f"{tensor.name}_cast"),
                        attrs={"to": self.half.elem if want else FLOAT}, inputs=[tensor],
                        outputs=[cast_output]))
                    casts[key] = cast_output
                    is_fp16[cast_output.name] = want
                    self._count_cast(top_level)
                node.inputs[index] = casts[key]
                changed = True

        for node in body.nodes:
            for tensor in node.outputs:
                if is_fp16.get(tensor.name) and isinstance(tensor, gs.Variable):
                    tensor.dtype = self.half.np_type
        for tensor, fp16 in zip(body.inputs, [is_fp16.get(t.name) for t in body.inputs]):
            if fp16 and isinstance(tensor, gs.Variable):
                tensor.dtype = self.half.np_type
        return changed

    def _fp16_constant(self, tensor: gs.Constant, converted: dict[str, gs.Constant],
                       top_level: bool) -> gs.Constant:
        if tensor.name not in converted:
            only_reader = len(tensor.outputs) == 1
            name = (tensor.name if only_reader
                    else self.scope.fresh(f"{tensor.name}_{self.half.suffix}"))
            converted[tensor.name] = gs.Constant(name, tensor.values.astype(self.half.np_type))
            if top_level:
                self.result.count("converted_weights")
        return converted[tensor.name]

    def _suffix(self, half: bool) -> str:
        return self.half.suffix if half else "fp32"

    def _np_type(self, half: bool) -> type:
        return self.half.np_type if half else np.float32

    def _count_cast(self, top_level: bool) -> None:
        self.result.count("inserted_casts" if top_level else "inserted_casts_in_functions")


_SHAPE_ARITHMETIC = "computes values that end up as integers (shape arithmetic, exact only in float32)"

def _integer_path(half: Half) -> str:
    return ("casts integers to float that end up as integers again (exact in float32 up to "
            f"2^24, in {half.name} only up to {half.exact_integers})")


def _integers_back(node: gs.Node, types: dict[str, int], integer_bound: set[int]) -> bool:
    """True if ``node`` casts an integer (or bool) tensor to float and some reader of the result
    takes it back to integers (:func:`_integer_bound_nodes`): ids, positions and counts keep
    float32, so an integer path never passes through float16."""
    if node.op != "Cast" or not ir.is_onnx_op(node) or not node.inputs:
        return False
    if types.get(node.inputs[0].name) in (*_FLOAT_TYPES, None):
        return False
    return any(id(reader) in integer_bound for tensor in node.outputs for reader in tensor.outputs)


def _integer_bound_nodes(body: gs.Graph, float32: set[str]) -> set[int]:
    """Nodes whose float32 results are only ever cast to integers (shape arithmetic).

    float16 represents integers exactly only up to 2048, so such chains stay float32. Found in
    one backward sweep over the (topologically sorted) nodes.
    """
    body_outputs = ir.output_names(body)
    bound: set[int] = set()
    for node in reversed(body.nodes):
        if node.op == "Cast" and node.inputs and node.inputs[0].name in float32:
            if node.attrs.get("to") not in _FLOAT_TYPES:
                bound.add(id(node))
            continue
        results = [t for t in node.outputs if t.name in float32]
        if not results or any(t.name in body_outputs for t in results):
            continue
        readers = [reader for t in results for reader in t.outputs]
        if readers and all(id(reader) in bound for reader in readers):
            bound.add(id(node))
    return bound
