"""The pass reference (``trtcompile passes``, docs/passes.md): generated from the registry, so
it cannot drift from the passes."""

from __future__ import annotations

import dataclasses
import inspect
import typing

# --------------------------------------------------------------------------------------------
# passes
# --------------------------------------------------------------------------------------------


def type_name(annotation) -> str:
    """An option type as the reference shows it."""
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return f"list of {type_name(args[0]) if args else 'str'}"
    return getattr(annotation, "__name__", str(annotation))


def format_default(value) -> str:
    """An option value as pipeline text writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(format_default(v) for v in value) if value else "(empty)"
    return str(value)


def pass_options(cls) -> list[tuple[str, str, str]]:
    """(kebab-case name, type, default) of each option of a pass class."""
    types_ = cls.option_types()
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        rows.append((f.name.replace("_", "-"), type_name(types_[f.name]), format_default(default)))
    return rows


def _doc_body(cls) -> str:
    """The docstring after its first paragraph (the summary)."""
    doc = inspect.getdoc(cls) or ""
    parts = doc.split("\n\n", 1)
    return parts[1].strip("\n") if len(parts) > 1 else ""


def needs_line(cls) -> str:
    """What a pass needs in the graph to run at all (:attr:`Pass.needs_ops`), or nothing."""
    if not cls.needs_ops:
        return ""
    return (f"Runs only on graphs holding {' or '.join(sorted(cls.needs_ops))} (in any scope); "
            f"the pass manager records other runs as skipped.")


def passes_text(registry) -> str:
    """The pass list for the terminal."""
    lines = [f"pipeline '{name}': {text}" for name, text in registry.pipelines().items()] + [""]
    for cls in registry:
        lines.append(f"{cls.name}: {cls.summary()}")
        options = pass_options(cls)
        if options:
            lines.append("  options:")
            for name, type_, default in options:
                lines.append(f"    {name}: {type_} = {default}")
        if needs := needs_line(cls):
            lines.append(f"  {needs}")
        body = _doc_body(cls)
        if body:
            lines += [f"  {line}".rstrip() for line in body.splitlines()]
        lines.append("")
    return "\n".join(lines)


def passes_markdown(registry) -> str:
    """The pass reference in Markdown (committed as docs/passes.md)."""
    lines = [
        "# Pass reference",
        "",
        # The blocks below are this function's output: the docs test (tests/test_docs_run.py)
        # leaves them to the test that compares the whole file with it.
        "<!-- docs-test-file: generated: tests/test_cli.py::test_docs_passes_md_is_the_generated_reference -->",
        "",
        "Generated from the passes' docstrings by `trtcompile passes --markdown`; edit the docstrings,",
        "not this file. Options are set in pipeline text: `name{option=value other=a,b}`.",
        "",
        "Named pipelines (a name stands for its text anywhere in `--pipeline`):",
        "",
    ]
    for name, text in registry.pipelines().items():
        lines += [f"- `{name}`:", "", "  ```text", f"  {text}", "  ```", ""]
    for cls in registry:
        lines += [f"## {cls.name}", "", f"`{cls.__module__}.{cls.__qualname__}`", "",
                  cls.summary(), ""]
        if needs := needs_line(cls):
            lines += [needs, ""]
        options = pass_options(cls)
        if options:
            lines += ["| option | type | default |", "| --- | --- | --- |"]
            lines += [f"| `{name}` | {type_} | `{default}` |" for name, type_, default in options]
            lines.append("")
        body = _doc_body(cls)
        if body:
            lines += ["```text", body, "```", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


