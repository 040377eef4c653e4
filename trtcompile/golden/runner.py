"""Running golden entries: one entry through the compile flow, the outcome and what regressed,
the serial run, and how outcomes are rendered (table, JUnit XML) and written back (update)."""


import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

from trtcompile import ir
from trtcompile.errors import CheckFailed, InputError, TrtcompileError
from trtcompile.golden.manifest import (
    Expectations,
    GoldenEntry,
    Manifest,
    load_parity_data,
)

# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    """One expectation an entry did not meet."""

    #: ``layers``, ``engine_compute_layers`` or ``passes.<pass>``.
    key: str
    expected: int
    #: None when the thing could not be counted (a pass that did not run).
    got: int | None

    def describe(self) -> str:
        if self.got is None:
            return f"{self.key}: expected {self.expected}, but the pass did not run"
        diff = self.got - self.expected
        return (f"{self.key}: expected {self.expected}, got {self.got} "
                f"({abs(diff)} {'more' if diff > 0 else 'fewer'})")


@dataclass
class GoldenOutcome:
    """What running one entry found: the counts, parity, time, and what regressed."""

    entry: GoldenEntry
    seconds: float = 0.0
    layers_input: int | None = None
    layers: int | None = None
    #: Layers after the last run of each pass that ran, by pass name.
    passes: dict[str, int] = field(default_factory=dict)
    engine_compute_layers: int | None = None
    parity: Any = None  # trtcompile.flow.ParityVerdict
    pipeline_report: Any = None  # trtcompile.pm.PipelineReport
    engine: Any = None  # trtcompile.backend.EngineBuild
    #: Digest of the optimized model's graph and functions (:func:`trtcompile.ir.model_digest`).
    digest: str | None = None
    #: The partition stage's outcome when TensorRT's parser rejected nodes (one engine per
    #: segment; ``engine_compute_layers`` is then their sum).
    partition: Any = None
    histogram: dict[str, int] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)
    #: The error that stopped the entry (unusable input, a failing pass, a failed engine build).
    error: TrtcompileError | None = None

    @property
    def parity_passed(self) -> bool:
        return self.parity is not None and self.parity.passed

    @property
    def passed(self) -> bool:
        return self.error is None and self.parity_passed and not self.mismatches

    @property
    def status(self) -> str:
        """``ok``, ``REGRESSED`` (counts), ``PARITY FAILED``, or ``ERROR``."""
        if self.error is not None:
            return "ERROR"
        if not self.parity_passed:
            return "PARITY FAILED"
        return "REGRESSED" if self.mismatches else "ok"

    @property
    def max_abs_error(self) -> float | None:
        """Largest absolute error of any output of the end-to-end comparison."""
        if self.parity is None or not self.parity.primary.outputs:
            return None
        return max(o.max_abs for o in self.parity.primary.outputs.values())

    def problems(self) -> list[str]:
        """One line per thing that regressed, in the order it matters."""
        lines = []
        if self.error is not None:
            lines.append(f"error ({type(self.error).__name__}): {self.error}")
        if self.parity is not None and not self.parity.passed:
            lines.append(self.parity.error_message())
        lines += [mismatch.describe() for mismatch in self.mismatches]
        return lines

    def explain(self) -> str:
        """What regressed and the evidence: the layers after each pass, the op histogram, and the
        engine's compute layer types (everything an engineer looks at first)."""
        from trtcompile import report

        lines = [f"{self.entry.name} ({self.entry.source}): {self.status}"]
        lines += [f"  {problem}" for problem in self.problems()]
        if self.pipeline_report is not None:
            trail = ", ".join(f"{report.pass_label(r)} {r['layers_after']}"
                              for r in self.pipeline_report.to_dict()["passes"])
            lines.append(f"  layers after each pass: input {self.layers_input}"
                         f"{', ' + trail if trail else ''}")
            lines.append("  optimized op histogram: " + report.format_counts(self.histogram))
        if self.engine is not None:
            from trtcompile.backend import layer_type_histogram

            lines.append("  engine compute layer types: " + report.format_counts(
                layer_type_histogram(self.engine.layers, compute_only=True)))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (used by the JUnit properties and by tests)."""
        return {
            "name": self.entry.name, "status": self.status, "seconds": round(self.seconds, 6),
            "layers": self.layers, "engine_compute_layers": self.engine_compute_layers,
            "passes": dict(self.passes), "max_abs_error": self.max_abs_error,
            "problems": self.problems(),
        }


def compile_options(entry: GoldenEntry):
    """The :class:`~trtcompile.flow.CompileOptions` an entry describes (no files written)."""
    from trtcompile.flow import CompileOptions
    from trtcompile.frontend.model import FrontendOptions
    from trtcompile.shapes import ShapeOptions

    atol, rtol = entry.tolerances()
    shapes = ShapeOptions(**{key: [dict(entry.profile[key])] for key in entry.profile})
    return CompileOptions(
        pipeline=entry.pipeline, pass_modules=entry.pass_modules, atol=atol, rtol=rtol,
        seed=entry.seed, data_range=entry.data_range, engine=entry.engine,
        frontend=FrontendOptions(input_shapes={k: list(v) for k, v in entry.input_shapes.items()}),
        progress=False, example=entry.example, precision=entry.precision,
        calib_data=entry.calib_data, calib_method=entry.calib_method, shapes=shapes,
        build=entry.build)


def run_entry(entry: GoldenEntry) -> GoldenOutcome:
    """Compile ``entry`` in memory through the compile flow's stages (load, passes, parity, the
    partition stage, the engine when asked), exactly as ``trtcompile compile`` would, and compare
    what it produced with what it expects. Errors of the entry are recorded in the outcome, not
    raised."""
    from trtcompile.flow import Compilation

    outcome = GoldenOutcome(entry=entry)
    started = time.perf_counter()
    try:
        compilation = Compilation(entry.path, compile_options(entry))
        loaded = compilation.load()
        optimized, pipeline_report = compilation.optimize()
        outcome.digest = ir.model_digest(optimized)
        outcome.pipeline_report = pipeline_report
        outcome.layers_input = pipeline_report.layers_before
        outcome.layers = pipeline_report.layers_after
        outcome.passes = pipeline_report.layers_after_pass()
        outcome.histogram = dict(pipeline_report.histogram_after)
        feeds = load_parity_data(entry.data, loaded.model, entry.name) if entry.data else None
        outcome.parity = compilation.check_parity(feeds)
        if compilation.error is None and entry.engine:
            outcome.partition = compilation.partition()
            outcome.engine = compilation.build_engine()
            if compilation.error is not None:
                raise compilation.error
            if outcome.partition is not None:
                outcome.engine_compute_layers = sum(
                    s.engine.compute_layers for s in outcome.partition.segments if s.engine)
            else:
                if not outcome.engine.layer_report_available:
                    raise CheckFailed("the engine was built but the builder reported no layers, "
                                      "so its compute layers cannot be counted")
                outcome.engine_compute_layers = outcome.engine.compute_layers
    except TrtcompileError as exc:
        outcome.error = exc
    outcome.seconds = time.perf_counter() - started
    outcome.mismatches = compare(entry.expect, outcome)
    return outcome


def compare(expect: Expectations, outcome: GoldenOutcome) -> list[Mismatch]:
    """The expectations ``outcome`` does not meet (counts that could not be measured because the
    entry stopped early are not mismatches: the error says why)."""
    mismatches = []
    if outcome.pipeline_report is not None:
        if expect.layers is not None and outcome.layers != expect.layers:
            mismatches.append(Mismatch("layers", expect.layers, outcome.layers))
        for pass_name, expected in expect.passes.items():
            got = outcome.passes.get(pass_name)
            if got != expected:
                mismatches.append(Mismatch(f"passes.{pass_name}", expected, got))
    if expect.engine_compute_layers is not None and outcome.engine_compute_layers is not None \
            and outcome.engine_compute_layers != expect.engine_compute_layers:
        mismatches.append(Mismatch("engine_compute_layers", expect.engine_compute_layers,
                                   outcome.engine_compute_layers))
    return mismatches


def progress_bar(total: int, progress: bool):
    """The golden runs' progress bar over models (tqdm on stderr)."""
    from tqdm import tqdm

    return tqdm(total=total, desc="golden", unit="model", leave=False, dynamic_ncols=True,
                disable=None if progress else True)


def run_serial(entries: Sequence[GoldenEntry], *, progress: bool,
                on_outcome: Callable[[GoldenOutcome], None] | None) -> list[GoldenOutcome]:
    outcomes = []
    with progress_bar(len(entries), progress) as bar:
        for entry in entries:
            bar.set_postfix_str(entry.name, refresh=True)
            outcome = run_entry(entry)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
            bar.update(1)
    return outcomes


def exit_code(outcomes: Iterable[GoldenOutcome]) -> int:
    """0 when every entry passed; 2 when an entry's input was unusable (a model that does not
    load, data that does not fit); otherwise 1 when anything regressed or failed."""
    outcomes = list(outcomes)
    if any(isinstance(o.error, InputError) for o in outcomes):
        return InputError.exit_code
    return 0 if all(o.passed for o in outcomes) else CheckFailed.exit_code


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _vs(expected: int | None, got: int | None) -> str:
    if got is None:
        return "-" if expected is None else f"- (expected {expected})"
    if expected is None or expected == got:
        return str(got)
    return f"{got} (expected {expected})"


def _passes_cell(outcome: GoldenOutcome) -> str:
    expected = outcome.entry.expect.passes
    if not expected:
        return "-"
    wrong = [m for m in outcome.mismatches if m.key.startswith("passes.")]
    if outcome.pipeline_report is None:
        return "-"
    if not wrong:
        return f"{len(expected)} ok"
    if len(wrong) == 1:
        return f"{wrong[0].key[len('passes.'):]} {_vs(wrong[0].expected, wrong[0].got)}"
    return f"{len(wrong)} of {len(expected)} differ"


def format_table(outcomes: Sequence[GoldenOutcome]) -> list[str]:
    """One row per entry: layers and engine compute layers (got, and the expectation when they
    differ), the passes checked, the largest parity error, the time and the verdict."""
    from trtcompile.report import format_seconds
    from trtcompile.report import format_table as table

    header = ("model", "layers", "engine layers", "passes", "parity max_abs", "time", "result")
    rows = []
    for o in outcomes:
        expect = o.entry.expect
        error = o.max_abs_error
        rows.append((
            o.entry.name, _vs(expect.layers, o.layers),
            _vs(expect.engine_compute_layers, o.engine_compute_layers) if o.entry.engine else "-",
            _passes_cell(o), "-" if error is None else f"{error:.3g}",
            format_seconds(o.seconds), o.status))
    return table(header, rows, (False, True, True, False, True, True, False))


def summary_line(outcomes: Sequence[GoldenOutcome]) -> str:
    """``3 models: 2 passed, 1 regressed (inception)``."""
    failed = [o for o in outcomes if not o.passed]
    count = f"{len(outcomes)} model{'s' if len(outcomes) != 1 else ''}"
    if not failed:
        return f"{count}: all passed"
    return (f"{count}: {len(outcomes) - len(failed)} passed, {len(failed)} failed "
            f"({', '.join(o.entry.name for o in failed)})")


#: Characters XML 1.0 cannot hold, escaped or not (control characters, U+FFFE, U+FFFF).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(value: object) -> str:
    """``value`` as text XML can hold: a character it cannot is written as ``\\uXXXX``."""
    return _NOT_XML.sub(lambda match: f"\\u{ord(match.group()):04x}", str(value))


def junit_xml(outcomes: Sequence[GoldenOutcome], suite_name: str) -> bytes:
    """A JUnit XML report: one ``testcase`` per entry; a regression or a parity failure is a
    ``failure``, an entry that could not run an ``error``; the explanation is the element text.
    Every name and message is made well-formed (characters XML cannot hold are escaped as
    ``\\uXXXX``), whatever an entry or an error message holds."""
    suite_name = _xml_text(suite_name)
    failures = sum(1 for o in outcomes if o.error is None and not o.passed)
    errors = sum(1 for o in outcomes if o.error is not None)
    total_seconds = f"{sum(o.seconds for o in outcomes):.3f}"
    suites = ElementTree.Element("testsuites", name="trtcompile golden", tests=str(len(outcomes)),
                                 failures=str(failures), errors=str(errors), time=total_seconds)
    suite = ElementTree.SubElement(suites, "testsuite", name=suite_name, tests=str(len(outcomes)),
                                   failures=str(failures), errors=str(errors), skipped="0",
                                   time=total_seconds)
    for o in outcomes:
        case = ElementTree.SubElement(suite, "testcase", classname=f"golden.{suite_name}",
                                      name=_xml_text(o.entry.name), time=f"{o.seconds:.3f}")
        properties = ElementTree.SubElement(case, "properties")
        for key, value in (("source", o.entry.source), ("pipeline", o.entry.pipeline),
                           ("precision", o.entry.precision), ("layers", o.layers),
                           ("engine_compute_layers", o.engine_compute_layers),
                           ("max_abs_error", o.max_abs_error)):
            if value is not None:
                ElementTree.SubElement(properties, "property", name=key, value=_xml_text(value))
        if not o.passed:
            problems = o.problems()
            tag = "error" if o.error is not None else "failure"
            kind = type(o.error).__name__ if o.error is not None else o.status.lower()
            element = ElementTree.SubElement(case, tag, message=_xml_text("; ".join(problems)),
                                             type=kind)
            element.text = _xml_text(o.explain())
    ElementTree.indent(suites)
    return ElementTree.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


# --------------------------------------------------------------------------------------------
# Updating expectations
# --------------------------------------------------------------------------------------------


def update_manifest(manifest: Manifest, outcomes: Sequence[GoldenOutcome]) -> list[str]:
    """Rewrite the expected counts of the entries in ``outcomes`` with what they measured, keeping
    every comment, key order and formatting of the file; return one line per changed value.

    ``layers`` is always written; ``engine_compute_layers`` when the engine was built; the
    ``passes`` listed stay those listed (their counts updated). Entries that stopped with an error
    are left alone. Nothing is written when nothing changed.
    """
    import tomlkit

    text = manifest.path.read_text(encoding="utf-8")
    document = tomlkit.parse(text)
    tables = document["model"]
    changes: list[str] = []

    def set_count(container, key: str, label: str, value: int | None) -> None:
        """Write ``value`` under ``key`` if it differs, recording ``label: old -> new``."""
        if value is None:
            return
        previous = container.get(key)
        if previous == value:
            return
        container[key] = value
        changes.append(f"{label} {previous if previous is not None else '(none)'} -> {value}")

    for outcome in outcomes:
        entry = outcome.entry
        if outcome.error is not None or outcome.pipeline_report is None:
            continue
        table = tables[entry.index]
        if "expect" not in table:
            table["expect"] = tomlkit.table()
        expect = table["expect"]
        set_count(expect, "layers", f"{entry.name}: layers", outcome.layers)
        if entry.engine:
            set_count(expect, "engine_compute_layers", f"{entry.name}: engine_compute_layers",
                      outcome.engine_compute_layers)
        if "passes" in expect:
            for pass_name in list(expect["passes"]):
                set_count(expect["passes"], pass_name, f"{entry.name}: passes.{pass_name}",
                          outcome.passes.get(pass_name))
    if changes:
        ir.atomic_write_bytes(manifest.path, tomlkit.dumps(document).encode("utf-8"))
    return changes


__all__ = ["GoldenOutcome", "Mismatch", "compare", "compile_options", "exit_code", "format_table",
           "junit_xml", "progress_bar", "run_entry", "run_serial", "summary_line",
           "update_manifest"]
