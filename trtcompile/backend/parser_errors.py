"""What TensorRT's ONNX parser says when it rejects a node, in one line a user can act on: the
node, the function call it sits in, and the readable part of the parser's description (shared by
the build and the support query)."""

from __future__ import annotations

import re
from typing import Any

from trtcompile.backend.log import LogCapture


def parser_error_line(parser: Any, capture: LogCapture | None = None) -> str:
    """One line naming the node(s) TensorRT's ONNX parser rejected and why."""
    parts: list[str] = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        node_name, operator = error.node_name(), error.node_operator()
        if node_name:
            where = f"node '{node_name}'" + (f" ({operator})" if operator else "")
        elif error.node() >= 0:
            where = f"node #{error.node()}" + (f" ({operator})" if operator else "")
        else:
            where = ""
        stack = list(error.local_function_stack()) if hasattr(error, "local_function_stack") else []
        if stack:
            where += " inside function call " + " > ".join(f"'{name}'" for name in stack)
        description = rejection_reason(clean_parser_description(error.desc()), error.func(),
                                       operator, parser="the parser")
        part = f"{where}: {description}" if where else description
        if part not in parts:
            parts.append(part)
    if not parts and capture is not None:
        parts = capture.errors()[-3:]
    detail = "; ".join(parts) if parts else "no reason given"
    return f"TensorRT's ONNX parser rejected the model: {detail}"


#: Descriptions TensorRT's parser gives when an op checker simply returned false.
UNHELPFUL_DESCRIPTIONS = frozenset({"", "false", "0"})


def rejection_reason(description: str, checker: str, op_type: str,
                     parser: str = "TensorRT's ONNX parser") -> str:
    """``description`` in words when the parser's own is an unhelpful ``false``: the op is not
    supported, or (when the failing checker is another op's) something inside this node."""
    if description.lower() not in UNHELPFUL_DESCRIPTIONS:
        return description
    checker = checker or ""
    if not op_type or not checker or checker.lower() == f"check{op_type}".lower():
        return (f"{parser} does not support {op_type or 'this op'} here"
                + (f" ({checker})" if checker else ""))
    return f"{parser} rejects this {op_type} node ({checker} failed inside it)"


def clean_parser_description(description: str) -> str:
    """The readable part of a parser error description.

    Descriptions are often assertion texts: ``Assertion failed: (cond): message`` or
    ``cond && "message"``; the message is what a user can act on.
    """
    text = " ".join(description.split())
    if text.startswith("Assertion failed: "):
        text = text[len("Assertion failed: "):]
    quoted = re.fullmatch(r'.*&& "(.+)"', text)
    if quoted:
        return quoted.group(1)
    if text.startswith("("):
        depth = 0
        for position, char in enumerate(text):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                rest = text[position + 1:]
                if rest.startswith(": ") and rest[2:].strip():
                    return rest[2:].strip()
                break
    return text
