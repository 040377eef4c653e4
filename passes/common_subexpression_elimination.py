"""common-subexpression-elimination: nodes that compute the same thing from the same inputs become
one node."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.pm import Pass, PassContext, PassResult

#: ONNX ops whose result is drawn at random: two of them with the same inputs and attributes still
#: compute different values, so they are never merged (``Dropout`` is handled by its mode).
_RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                         "Bernoulli", "Multinomial"})

#: Domains whose ops are deterministic functions of their inputs and attributes (apart from the
#: random ops above). Ops of any other domain (a runtime's contrib ops, custom plugins) have
#: semantics the pass does not know, so they are never merged.
_KNOWN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})

#: Binary ops whose two operands commute exactly (IEEE addition and multiplication are commutative
#: bit for bit; the logical and bitwise ops trivially): ``Add(a, b)`` is ``Add(b, a)``.
_COMMUTATIVE = frozenset({"Add", "Mul", "And", "Or", "Xor", "Equal", "BitwiseAnd", "BitwiseOr",
                          "BitwiseXor"})


class _Unkeyable(Exception):
    """An attribute value the pass cannot compare exactly (the node is then never merged)."""


@dataclass
class _ConstantEntry:
    tensor: gs.Constant
    token: tuple
    prefix: bytes | None = None
    digest: bytes | None = None

    def values(self) -> np.ndarray:
        return np.asarray(self.tensor.values)

    def get_prefix(self) -> bytes:
        if self.prefix is None:
            self.prefix = _prefix(self.values())
        return self.prefix

    def get_digest(self) -> bytes:
        if self.digest is None:
            self.digest = _digest(self.values())
        return self.digest


@dataclass
class _Group:
    """Constants of one dtype and shape, indexed by their first bytes and then by a hash of all
    their bytes, so telling a constant from the k before it costs a few lookups, not k
    comparisons."""

    #: The first constant of the group, whose values are read only once a second one appears.
    unread: _ConstantEntry | None = None
    by_prefix: dict[bytes, list[_ConstantEntry]] = field(default_factory=dict)
    #: (prefix, digest) -> entries; an entry is hashed once, when its prefix bucket gets a second.
    by_digest: dict[tuple[bytes, bytes], list[_ConstantEntry]] = field(default_factory=dict)

    #: ids of the entries in ``by_digest``.
    hashed: set[int] = field(default_factory=set)

    def _hash(self, bucket: list[_ConstantEntry]) -> None:
        for member in bucket:
            if id(member) not in self.hashed:
                self.hashed.add(id(member))
                self.by_digest.setdefault((member.get_prefix(), member.get_digest()),
                                          []).append(member)

    def _index(self, entry: _ConstantEntry) -> None:
        bucket = self.by_prefix.setdefault(entry.get_prefix(), [])
        bucket.append(entry)
        if len(bucket) > 1:
            self._hash(bucket)

    def match(self, entry: _ConstantEntry) -> _ConstantEntry | None:
        """The earlier constant with ``entry``'s bytes (then ``entry`` is not added), else None
        (``entry`` joins the group)."""
        if self.unread is None and not self.by_prefix:
            self.unread = entry
            return None
        if self.unread is not None:
            self._index(self.unread)
            self.unread = None
        prefix = entry.get_prefix()
        bucket = self.by_prefix.get(prefix)
        if bucket:
            self._hash(bucket)
            for other in self.by_digest.get((prefix, entry.get_digest()), ()):
                if _same_bytes(entry.values(), other.values()):
                    return other
        self._index(entry)
        return None


@dataclass
class _Constants:
    """Constants identified by value: two constants with the same dtype, shape and bytes get the
    same token. Values are read only once a second constant of the same dtype and shape appears;
    then their first bytes are compared, all bytes are hashed only when those agree, and compared
    in full when the hashes agree (weights of one shape seldom share their first bytes, so most
    are never hashed). Every step is a dictionary lookup: the pass stays linear in the number of
    constants however many share a shape."""

    groups: dict[tuple, _Group] = field(default_factory=dict)
    tokens: dict[int, tuple] = field(default_factory=dict)
    kept: list[gs.Constant] = field(default_factory=list)  # keeps ids valid while the pass runs

    def token(self, tensor: gs.Constant) -> tuple:
        cached = self.tokens.get(id(tensor))
        if cached is not None:
            return cached
        # dtype and shape without loading the values (an initializer in external data stays on
        # disk unless another constant has its dtype and shape).
        group = self.groups.setdefault((_dtype_key(tensor.dtype), tuple(tensor.shape)), _Group())
        entry = _ConstantEntry(tensor, ("c", len(self.tokens)))
        same = group.match(entry)
        token = same.token if same is not None else entry.token
        self.tokens[id(tensor)] = token
        self.kept.append(tensor)
        return token


def _prefix(values: np.ndarray) -> bytes:
    """The first 64 bytes of the values (of their text for string tensors)."""
    if values.dtype.kind == "O":
        return repr(values.reshape(-1)[:8].tolist()).encode()
    return np.ascontiguousarray(values.reshape(-1)[:64]).tobytes()[:64]


def _dtype_key(dtype) -> str:
    """A dtype's identity: numpy's, or onnx-graphsurgeon's ONNX type for those numpy lacks."""
    try:
        return np.dtype(dtype).str
    except TypeError:
        return repr(dtype)


def _digest(values: np.ndarray) -> bytes:
    if values.dtype.kind == "O":
        return hashlib.blake2b(repr(values.tolist()).encode(), digest_size=16).digest()
    return hashlib.blake2b(memoryview(np.ascontiguousarray(values)).cast("B"),
                           digest_size=16).digest()


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bytes (so NaNs with one payload are equal, 0.0 and -0.0 are not)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "O":
        return a.tolist() == b.tolist()
    return memoryview(np.ascontiguousarray(a)).cast("B") == memoryview(
        np.ascontiguousarray(b)).cast("B")


@dataclass(frozen=True)
class CommonSubexpressionElimination(Pass):
    """Merge nodes that compute the same values: same op, domain, attributes and inputs.

    Rules:
      1. Two nodes are the same when their op, domain and attributes are equal (floats compared
         bit for bit, tensor attributes by value) and they read the same inputs in the same
         order (either order for the two operands of ``Add``, ``Mul`` and the logical and bitwise
         binary ops, which commute exactly) and have the same outputs present. A constant input
         is the same as another when dtype, shape and bytes are equal: two initializers (or
         ``Constant`` values) with equal bytes count as one value. The later node is removed and
         its readers (including If/Loop/Scan bodies) read the earlier node's outputs
         (``merged_nodes``).
      2. A graph output keeps its name: when the removed node writes a graph output and the kept
         one does not, the kept node writes that output under its name and its own readers
         follow (``merged_into_graph_output``); when both write graph outputs, each output must
         keep its name and both nodes stay (rejected).
      3. Never merged: random ops (``RandomNormal``, ``RandomUniform`` and their ``Like`` forms,
         ``Bernoulli``, ``Multinomial``) and ``Dropout`` unless it is in inference (no
         ``training_mode`` or a constant false one, and no ``is_test=0``), since each draws its
         own values; nodes holding subgraphs (If/Loop/Scan: bodies are not compared); ops of a
         domain other than ONNX's (semantics unknown); calls of a model-local function whose body
         holds any of these. A candidate equal to an earlier node in all else is rejected with
         the reason.
      4. Merging two nodes makes their readers equal: the walk repeats until no node merges.
         Nodes in If/Loop/Scan bodies merge among themselves; model-local function bodies are
         left alone (they are fused layers whose bodies other passes write).
      5. A node equal to an earlier one in op and non-constant inputs but not in attributes or
         constant inputs is rejected with what differs, so ``--why-not`` shows near misses.

    Exact: the kept node computes bit for bit what the removed one computed. Requires:
    topologically sorted nodes. Preserves: topological order, graph inputs and outputs (names,
    shapes, dtypes), every output value. Removes no node other than the merged ones (a constant
    only the removed node read is no longer written).

    Run after ``fold-constants``: models that build their weights at run time (ONNX's light
    models fill them with ``ConstantOfShape``) then compare as constants. Measured on
    TensorRT-RTX 1.7: sibling convolutions with bit-identical weights stay separate layers in
    the engine (GoogLeNet light model: 80 -> 78 engine layers once merged).
    """

    name: ClassVar[str] = "common-subexpression-elimination"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        constants = _Constants()
        deterministic_calls: dict[tuple[str, str], bool] = {}
        functions = ir.functions_by_key(graph)
        scopes = [graph]
        while scopes:
            scope = scopes.pop()
            while self._merge_once(scope, constants, functions, deterministic_calls, result, ctx):
                pass
            for node in scope.nodes:
                scopes.extend(ir.subgraphs(node))
        # Later walks meet the same near misses again: each is reported once.
        result.rejections = list(dict.fromkeys(result.rejections))
        return result

    def _merge_once(self, graph: gs.Graph, constants: _Constants, functions: dict,
                    deterministic_calls: dict, result: PassResult, ctx: PassContext) -> bool:
        """One walk over ``graph``'s nodes in order; True if some node merged."""
        graph_outputs = ir.output_names(graph)
        seen: dict[tuple, gs.Node] = {}
        near: dict[tuple, gs.Node] = {}
        removed: set[int] = set()

        def tensor_token(tensor: gs.Tensor) -> tuple:
            if tensor.is_empty():
                return ("e", 0)
            if isinstance(tensor, gs.Constant):
                return constants.token(tensor)
            return ("v", id(tensor))

        def attr_token(value) -> object:
            if isinstance(value, bool):
                return ("i", int(value))
            if isinstance(value, (int, np.integer)):
                return ("i", int(value))
            if isinstance(value, (float, np.floating)):
                return ("f", struct.pack("<d", float(value)))
            if isinstance(value, str):
                return ("s", value)
            if isinstance(value, bytes):
                return ("b", value)
            if isinstance(value, gs.Constant):
                return ("t", constants.token(value))
            if isinstance(value, np.ndarray):
                return ("a", value.dtype.str, value.shape, _digest(value))
            if isinstance(value, (list, tuple)):
                return ("l", tuple(attr_token(v) for v in value))
            if isinstance(value, gs.Graph):
                return ("g",)  # bodies are not compared: such nodes are never merged (rule 3)
            if hasattr(value, "SerializeToString"):  # e.g. a TypeProto attribute
                return ("p", type(value).__name__, value.SerializeToString())
            raise _Unkeyable(type(value).__name__)

        changed = False
        for node in graph.nodes:
            try:
                attrs = tuple(sorted((k, attr_token(v)) for k, v in node.attrs.items()))
            except _Unkeyable:
                continue
            inputs = [tensor_token(t) for t in node.inputs]
            if node.op in _COMMUTATIVE and len(inputs) == 2 and ir.is_onnx_op(node):
                inputs.sort()
            outputs = tuple(not t.is_empty() for t in node.outputs)
            domain = node.domain or ""
            key = (domain, node.op, attrs, tuple(inputs), outputs)
            kept = seen.get(key)
            if kept is None:
                seen[key] = node
                if any(token[0] == "v" for token in inputs):
                    near_key = (domain, node.op, tuple(t if t[0] == "v" else ("c",) for t in inputs),
                                len(node.inputs))
                    earlier = near.setdefault(near_key, node)
                    if earlier is not node:
                        result.reject([earlier, node], self._difference(earlier, node, constants,
                                                                        attr_token))
                continue
            reason = self._never_merged(node, functions, deterministic_calls)
            if reason is None:
                reason = self._never_merged(kept, functions, deterministic_calls)
            if reason is not None:
                result.reject([kept, node], reason)
                continue
            clash = [(a.name, b.name) for a, b in zip(kept.outputs, node.outputs)
                     if a.name in graph_outputs and b.name in graph_outputs]
            if clash:
                result.reject([kept, node], f"outputs '{clash[0][0]}' and '{clash[0][1]}' are both "
                                            "graph outputs: each keeps its name")
                continue
            if not ctx.may_rewrite("merge-equal-nodes", [kept, node], result):
                continue
            renamed = False
            duplicates = list(node.outputs)
            node.inputs.clear()
            node.outputs.clear()
            for index, (original, duplicate) in enumerate(zip(list(kept.outputs), duplicates)):
                if duplicate.is_empty():
                    continue
                if duplicate.name in graph_outputs:
                    # The kept node writes the graph output under its name (rule 2).
                    ir.replace_uses(original, duplicate)
                    kept.outputs[index] = duplicate
                    renamed = True
                else:
                    ir.replace_uses(duplicate, original)
            removed.add(id(node))
            result.count("merged_nodes")
            if renamed:
                result.count("merged_into_graph_output")
            changed = True
        if removed:
            graph.nodes = [n for n in graph.nodes if id(n) not in removed]
        return changed

    @staticmethod
    def _difference(earlier: gs.Node, node: gs.Node, constants: _Constants, attr_token) -> str:
        """What tells two nodes of one op on the same non-constant inputs apart."""
        names = sorted(set(earlier.attrs) | set(node.attrs))
        differing = []
        for name in names:
            try:
                if (name not in earlier.attrs or name not in node.attrs
                        or attr_token(earlier.attrs[name]) != attr_token(node.attrs[name])):
                    differing.append(name)
            except _Unkeyable:
                differing.append(name)
        if differing:
            return f"attribute{'s' if len(differing) > 1 else ''} " + ", ".join(
                f"'{n}'" for n in differing) + " differ" + ("" if len(differing) > 1 else "s")
        for index, (a, b) in enumerate(zip(earlier.inputs, node.inputs)):
            if isinstance(a, gs.Constant) and isinstance(b, gs.Constant) and (
                    constants.token(a) != constants.token(b)):
                return f"constant input {index} differs ('{a.name}' and '{b.name}')"
        if len(earlier.outputs) != len(node.outputs) or any(
                a.is_empty() != b.is_empty() for a, b in zip(earlier.outputs, node.outputs)):
            return "they write different optional outputs"
        return "they are not equal"

    @classmethod
    def _never_merged(cls, node: gs.Node, functions: dict, deterministic_calls: dict) -> str | None:
        """Why ``node`` must not merge with an equal node (rule 3), or None."""
        if ir.subgraphs(node):
            return f"{node.op} holds subgraphs, which are not compared"
        domain = node.domain or ""
        if domain in _KNOWN_DOMAINS:
            return _random_reason(node)
        function = functions.get(ir.call_key(node))
        if function is None:
            return f"op '{domain}.{node.op}' has unknown semantics (it may not be deterministic)"
        if not _deterministic_function(function, functions, deterministic_calls):
            return f"local function '{domain}.{node.op}' draws random values"
        return None


def _random_reason(node: gs.Node) -> str | None:
    if node.op in _RANDOM_OPS:
        return f"{node.op} draws random values: equal nodes compute different ones"
    if node.op == "Dropout":
        if int(node.attrs.get("is_test", 1)) == 0:
            return "Dropout in training mode (is_test=0) draws a random mask"
        if len(node.inputs) >= 3 and not node.inputs[2].is_empty():
            training = ir.constant_value(node.inputs[2])
            if training is None:
                return "Dropout training_mode is not a constant: it may draw a random mask"
            if bool(np.asarray(training).reshape(-1)[0]):
                return "Dropout in training mode draws a random mask"
    return None


def _deterministic_function(function: gs.Function, functions: dict, memo: dict) -> bool:
    """True if every node of the function body (its If/Loop/Scan bodies and the functions it
    calls included) is a deterministic ONNX op."""
    key = ir.function_key(function)
    if key in memo:
        return memo[key]
    memo[key] = False  # a recursive call (ONNX forbids them) is not deterministic
    verdict = True
    for node in ir.scope_nodes(function):
        domain = node.domain or ""
        if domain in _KNOWN_DOMAINS:
            if _random_reason(node) is not None:
                verdict = False
                break
            continue
        callee = functions.get(ir.call_key(node))
        if callee is None or not _deterministic_function(callee, functions, memo):
            verdict = False
            break
    memo[key] = verdict
    return verdict


__all__ = ["CommonSubexpressionElimination"]
