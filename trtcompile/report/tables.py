"""Plain-text tables of the terminal report: cell formats (seconds, counts), the table layout, the
per-pass table with its rejection summary, and ``--why-not PASS``."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

#: Distinct rejection reasons shown per pass in the terminal (report.json has every rejection).
REJECTION_REASONS_SHOWN = 5
#: Columns the terminal report fits: longer cells wrap onto continuation lines, long labels are
#: abbreviated (report.json keeps every text whole).
TERMINAL_WIDTH = 120
#: Characters of a pass label in the table; a longer one (a combinator holding a whole
#: pipeline) keeps its head and ends with an ellipsis.
PASS_LABEL_WIDTH = 40
#: The narrowest the wrapped last column of a table gets.
MIN_LAST_COLUMN = 24


def abbreviate(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the last being an ellipsis when it was cut."""
    return text if len(text) <= width else text[:max(width - 1, 0)] + "\u2026"


def wrap_line(line: str, width: int = TERMINAL_WIDTH) -> list[str]:
    """A line of prose wrapped to ``width``: at spaces, and after the commas of a pipeline text
    (which has no spaces); continuation lines are indented two more than the line."""
    if len(line) <= width:
        return [line]
    indent = " " * (len(line) - len(line.lstrip()) + 2)
    pieces = []  # (text, glue before it)
    for word in line.lstrip().split(" "):
        parts = word.split(",") if len(word) > width - len(indent) else [word]
        for index, part in enumerate(parts):
            text = part + ("," if index < len(parts) - 1 else "")
            if text:
                pieces.append((text, " " if index == 0 else ""))
    lines, current = [], line[:len(line) - len(line.lstrip())]
    for text, glue in pieces:
        if current.strip() and len(current) + len(glue) + len(text) > width:
            lines.append(current)
            current = indent + text
        else:
            current += (glue if current.strip() else "") + text
    lines.append(current)
    return [line.rstrip() for line in lines]


def format_seconds(seconds: float) -> str:
    """``0.4 ms``, ``41.0 ms``, ``1.23 s``."""
    if seconds < 1.0:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def format_counts(counts: Mapping[str, Any]) -> str:
    """``fused_conv_relu=53 removed_dead=4``."""
    return " ".join(f"{key}={value}" for key, value in counts.items())


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                 right: Sequence[bool], width: int | None = None) -> list[str]:
    """Plain-text table: columns padded to their widest cell, numbers right-aligned; the last
    column is not padded (no trailing spaces).

    Within ``width`` columns (None: no limit): a first column that leaves the last fewer than
    :data:`MIN_LAST_COLUMN` characters is abbreviated, and a last cell that does not fit wraps
    at spaces onto continuation lines under it (the other cells blank)."""
    rows = [[str(cell) for cell in row] for row in rows]
    header = [str(cell) for cell in header]
    count = len(header)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(count)]
    if width is not None and count > 1:
        before_last = sum(widths[:-1]) + 2 * (count - 1)
        excess = before_last + MIN_LAST_COLUMN - width
        if excess > 0 and not right[0] and widths[0] - excess >= len(header[0]):
            widths[0] -= excess
            rows = [[abbreviate(row[0], widths[0]), *row[1:]] for row in rows]
        room = max(width - (sum(widths[:-1]) + 2 * (count - 1)), MIN_LAST_COLUMN)
        wrapped = []
        for row in rows:
            pieces = textwrap.wrap(row[-1], room, break_on_hyphens=False) or [""]
            wrapped.append([*row[:-1], pieces[0]])
            wrapped += [[""] * (count - 1) + [piece] for piece in pieces[1:]]
        rows = wrapped
        widths[-1] = max(len(row[-1]) for row in [header, *rows])
    lines = []
    for row in [header, *rows]:
        cells = []
        for i, cell in enumerate(row):
            cell = str(cell)
            last = i == len(row) - 1
            if right[i]:
                cells.append(cell.rjust(widths[i]))
            else:
                cells.append(cell if last else cell.ljust(widths[i]))
        lines.append("  ".join(cells).rstrip())
    return lines


def pass_label(record: Mapping[str, Any]) -> str:
    """The table's pass column: the pass as pipeline text (with its non-default options), and the
    fixed-point iteration when inside one."""
    label = record.get("pipeline_text") or record["name"]
    if record.get("iteration"):
        label += f" #{record['iteration']}"
    return label


def short_pass_label(record: Mapping[str, Any]) -> str:
    """:func:`pass_label` within :data:`PASS_LABEL_WIDTH` characters (the iteration kept): the
    terminal table's pass column."""
    suffix = f" #{record['iteration']}" if record.get("iteration") else ""
    text = record.get("pipeline_text") or record["name"]
    return abbreviate(text, PASS_LABEL_WIDTH - len(suffix)) + suffix


#: The width of the pass table's time column: wide enough for ``999.9 ms`` and ``999.99 s``, so
#: the counts column starts, and wraps, at the same place whatever the times of a run.
TIME_WIDTH = 8


def _time_cell(seconds: float) -> str:
    return format_seconds(seconds).rjust(TIME_WIDTH)


def format_pass_table(report: Mapping[str, Any]) -> list[str]:
    """The per-pass table (lowering first when there is one) and the rejection summary."""
    header = ("pass", "layers before", "layers after", "delta", "time", "counts")
    right = (False, True, True, True, True, False)
    rows = []
    lowering = report.get("lowering")
    if lowering:
        rows.append((
            f"lowering ({lowering['tool']}, {lowering['mode']})",
            f"{lowering['source_ops']} TF ops", f"{lowering['onnx_nodes']} nodes", "",
            _time_cell(lowering["seconds"]),
            format_counts({"tensorflow_ops": lowering["source_ops"],
                           "onnx_nodes": lowering["onnx_nodes"]}),
        ))
    for record in report["passes"]:
        rows.append((short_pass_label(record), str(record["layers_before"]), str(record["layers_after"]),
                     f"{record['delta']:+d}" if record["delta"] else "0",
                     _time_cell(record["seconds"]),
                     f"skipped: {record['skipped']}" if record.get("skipped")
                     else format_counts(record["counts"])))
    layers = report["layers"]
    total_delta = layers["optimized"] - layers["input"]
    rows.append(("total", str(layers["input"]), str(layers["optimized"]),
                 f"{total_delta:+d}" if total_delta else "0",
                 _time_cell(report.get("passes_seconds", 0.0)), ""))
    lines = format_table(header, rows, right, TERMINAL_WIDTH)
    lines.insert(len(lines) - 1, "-" * max(len(line) for line in lines))

    for fixed_point in report.get("fixed_points", []):
        state = "converged" if fixed_point["converged"] else "did NOT converge"
        lines += wrap_line(f"{fixed_point['pipeline']}: {state} after "
                           f"{fixed_point['iterations']} "
                           f"iteration{'s' if fixed_point['iterations'] != 1 else ''}")
    for tried in report.get("engine_guided", []):
        if tried["engine_before"] is None:  # no engine to judge by: the reason says why
            lines += wrap_line(f"engine-guided: {tried['group']}: {tried['reason']}")
            continue
        after = tried["engine_after"] if tried["engine_after"] is not None else "no engine"
        lines += wrap_line(f"engine-guided: {tried['group']}: engine {tried['engine_before']} -> "
                           f"{after} compute layers: {'kept' if tried['kept'] else tried['reason']}")
    rejections = rejection_summary(report["passes"])
    if rejections:
        lines.append("skipped candidates:")
        for pass_name, reasons in rejections.items():
            for reason, count in list(reasons.items())[:REJECTION_REASONS_SHOWN]:
                lines += wrap_line(f"  {pass_name}: {count} x {reason}")
            if len(reasons) > REJECTION_REASONS_SHOWN:
                hidden = sum(list(reasons.values())[REJECTION_REASONS_SHOWN:])
                lines.append(f"  {pass_name}: {hidden} more, for {len(reasons) - REJECTION_REASONS_SHOWN} "
                             "other reasons (all are in report.json)")
    return lines


def rejection_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per pass, the number of distinct rejected candidates by reason (repeated fixed-point runs
    rejecting the same candidate count once)."""
    seen: dict[str, set] = {}
    summary: dict[str, dict[str, int]] = {}
    for record in records:
        for rejection in record.get("rejections", []):
            key = (tuple(rejection["nodes"]), rejection["reason"])
            if key in seen.setdefault(record["name"], set()):
                continue
            seen[record["name"]].add(key)
            reasons = summary.setdefault(record["name"], {})
            reasons[rejection["reason"]] = reasons.get(rejection["reason"], 0) + 1
    return summary


def rejections_of(records: Sequence[Mapping[str, Any]], pass_name: str) -> list[dict[str, Any]]:
    """Every distinct candidate ``pass_name`` rejected (``{"nodes": [...], "reason": ...}``), in
    the order first rejected; repeated fixed-point runs rejecting the same candidate count once."""
    seen: dict[tuple, dict[str, Any]] = {}
    for record in records:
        if record["name"] != pass_name:
            continue
        for rejection in record.get("rejections", []):
            seen.setdefault((tuple(rejection["nodes"]), rejection["reason"]), rejection)
    return list(seen.values())


def format_why_not(report: Mapping[str, Any], pass_name: str,
                   ops: Mapping[str, str] | None = None) -> list[str]:
    """``--why-not PASS``: each candidate the pass considered and left alone, its nodes (with their
    op types when ``ops`` knows them) and the reason."""
    records = [r for r in report["passes"] if r["name"] == pass_name]
    check = report.get("engine_check") or {}
    verdicts = [f"  engine verdict: the compile undid {u['group']} ({u['reason']})"
                for u in check.get("undone", [])
                if pass_name in re.findall(r"[A-Za-z0-9_.-]+", u["group"])]
    if check.get("status") == "baseline delivered":
        verdicts.append(f"  engine verdict: the compile delivered the model without the rewrites "
                        f"({check['reason']})")
    if not records:
        if verdicts:
            return [f"why not {pass_name}: the engine check undid its rewrites", *verdicts]
        return [f"why not {pass_name}: the pass did not run (pipeline: "
                f"{report['pipeline'] or 'no passes'})"]
    runs = f"{len(records)} run{'s' if len(records) != 1 else ''}"
    if all(record.get("skipped") for record in records):
        return [f"why not {pass_name}: the pass manager skipped it ({runs}): "
                f"{records[-1]['skipped']}", *verdicts]
    counts: dict[str, int] = {}
    for record in records:
        for key, value in record["counts"].items():
            counts[key] = counts.get(key, 0) + value
    rewrote = f"; it rewrote: {format_counts(counts)}" if counts else "; it rewrote nothing"
    rejections = rejections_of(records, pass_name)
    if not rejections:
        return [f"why not {pass_name}: no candidate was left alone ({runs}{rewrote})", *verdicts]
    ops = ops or {}

    def node(name: str) -> str:
        return f"{name} ({ops[name]})" if name in ops else name

    reasons = {r["reason"] for r in rejections}
    lines = [f"why not {pass_name}: {len(rejections)} candidate{'s' if len(rejections) != 1 else ''}"
             f" left alone, {len(reasons)} reason{'s' if len(reasons) != 1 else ''} ({runs}{rewrote})"]
    rows = [(", ".join(node(n) for n in r["nodes"]) or "-", r["reason"]) for r in rejections]
    lines += ["  " + line for line in format_table(("nodes", "reason"), rows, (False, False))]
    return lines + verdicts
