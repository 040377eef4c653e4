"""The fenced blocks of README.md and docs/*.md, what each one is, and how a shown output is
compared with what the command prints today (docs/testing.md, "Docs that run").

Every fenced block is preceded by one or more directives, each an HTML comment of its own line:

    <!-- docs-test: run -->                     run the block (bash: every command; python: the code)
    <!-- docs-test: continues -->               python: run in the namespace of the file's previous python block
    <!-- docs-test: save-as my_passes.py -->    the block is that file of the workspace (written first)
    <!-- docs-test: output -->                  the output of the previous run block, compared
    <!-- docs-test: output-of trtcompile ... --> the output of that command (run now), compared
    <!-- docs-test: earlier -->                 with output-of: the command's output from where the
                                                 document ran it earlier, not run again
    <!-- docs-test: console -->                 `$ command` lines, each followed by its output, compared
    <!-- docs-test: excerpt -->                 the shown output may start and end anywhere in the output
    <!-- docs-test: exit 2 -->                  the block's commands exit with 2 (default 0)
    <!-- docs-test: files model.onnx=classifier x.npz=example-input -->  fixtures put into the workspace first
    <!-- docs-test: skip-command COMMAND: REASON -->  that command (or `START ...`) is not run
    <!-- docs-test: skip: REASON -->            not run; the reason is required

A file whose every block is generated says so once, before its first block:

    <!-- docs-test-file: generated: TEST -->    TEST compares the whole file with its generator
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tests.helpers import REPO

#: The documents whose blocks must all run or say why not.
DOCUMENTS = ("README.md", *sorted(f"docs/{path.name}" for path in (REPO / "docs").glob("*.md")))

_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
_DIRECTIVE = re.compile(r"^\s*<!-- docs-test: (?P<text>.+?) -->\s*$")
_FILE_DIRECTIVE = re.compile(r"^\s*<!-- docs-test-file: generated: (?P<test>\S+) -->\s*$")

#: Directive kinds, and whether each takes an argument.
KINDS = {"run": False, "continues": False, "save-as": True, "output": False, "output-of": True,
         "console": False, "excerpt": False, "earlier": False, "exit": True, "files": True, "skip-command": True,
         "skip": True}

#: What a block is, read from its directives (one of these per block).
ROLES = ("run", "save-as", "output", "output-of", "console", "skip", "generated")


class DirectiveError(ValueError):
    """A directive that does not parse, or a block whose directives make no sense together."""


@dataclass
class Block:
    """One fenced block: where it is, its text and the directives before it."""

    path: str               # relative to the repository, e.g. "docs/cli.md"
    line: int               # 1-based line of the opening fence
    lang: str
    lines: list[str]        # the block's lines, its fence's indentation removed
    directives: list[tuple[str, str]] = field(default_factory=list)  # (kind, argument)
    generated_by: str | None = None

    @property
    def where(self) -> str:
        """``path:line`` of the opening fence."""
        return f"{self.path}:{self.line}"

    @property
    def text(self) -> str:
        """The block's text, ending in a newline."""
        return "\n".join(self.lines) + "\n"

    def argument(self, kind: str) -> str | None:
        """The argument of the first ``kind`` directive, or None when there is none."""
        return next((argument for found, argument in self.directives if found == kind), None)

    def has(self, kind: str) -> bool:
        """Whether a ``kind`` directive precedes the block."""
        return any(found == kind for found, _ in self.directives)

    @property
    def role(self) -> str | None:
        """What the block is (one of ROLES), or None when its directives do not say."""
        if self.generated_by is not None:
            return "generated"
        roles = [kind for kind, _ in self.directives if kind in ROLES]
        return roles[0] if len(roles) == 1 else None

    @property
    def expected_exit(self) -> int:
        """The exit status the block's commands are expected to end with."""
        return int(self.argument("exit") or 0)

    def skip_reason(self, command: str) -> str | None:
        """Why ``command`` is not run, from a ``skip-command COMMAND: REASON`` directive (COMMAND
        is the whole command, or its start followed by `` ...``), or None."""
        for kind, argument in self.directives:
            if kind == "skip-command":
                pattern, _, reason = argument.partition(": ")
                pattern = pattern.strip()
                if command == pattern or (pattern.endswith(" ...")
                                          and command.startswith(pattern[:-3])):
                    return reason.strip()
        return None

    def fixtures(self) -> dict[str, str]:
        """Workspace name -> fixture name, from ``files`` directives."""
        named = {}
        for kind, argument in self.directives:
            if kind == "files":
                for item in argument.split():
                    name, _, fixture = item.partition("=")
                    named[name] = fixture or name
        return named


def parse_directive(text: str, where: str) -> tuple[str, str]:
    """``run`` -> ("run", ""); ``skip: needs a GPU`` -> ("skip", "needs a GPU")."""
    match = re.match(r"(?P<kind>[a-z-]+)(?::?\s+(?P<argument>.*))?$", text.strip())
    if match is None or match["kind"] not in KINDS:
        raise DirectiveError(f"{where}: unknown docs-test directive {text!r} (known: {', '.join(KINDS)})")
    kind, argument = match["kind"], (match["argument"] or "").strip()
    if KINDS[kind] and not argument:
        raise DirectiveError(f"{where}: docs-test directive {kind!r} needs an argument")
    if not KINDS[kind] and argument:
        raise DirectiveError(f"{where}: docs-test directive {kind!r} takes no argument")
    if kind == "skip-command" and ": " not in argument:
        raise DirectiveError(f"{where}: skip-command needs 'PREFIX: REASON'")
    return kind, argument


def parse_blocks(text: str, path: str) -> list[Block]:
    """The fenced blocks of one Markdown text, with their directives."""
    lines = text.split("\n")
    blocks: list[Block] = []
    generated_by = None
    pending: list[tuple[str, str]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        file_directive = _FILE_DIRECTIVE.match(line)
        directive = _DIRECTIVE.match(line)
        fence = _FENCE.match(line)
        if file_directive:
            generated_by = file_directive["test"]
        elif directive:
            pending.append(parse_directive(directive["text"], f"{path}:{index + 1}"))
        elif fence:
            indent = fence["indent"]
            end = index + 1
            while end < len(lines) and not re.match(rf"^{re.escape(indent)}```\s*$", lines[end]):
                end += 1
            if end == len(lines):
                raise DirectiveError(f"{path}:{index + 1}: fenced block is never closed")
            body = [body_line[len(indent):] if body_line.startswith(indent) else body_line.lstrip()
                    for body_line in lines[index + 1:end]]
            blocks.append(Block(path, index + 1, fence["lang"], body, pending, generated_by))
            pending = []
            index = end
        elif pending and line.strip():
            raise DirectiveError(f"{path}:{index + 1}: a docs-test directive must be followed by a "
                                 f"fenced block, not by text")
        index += 1
    if pending:
        raise DirectiveError(f"{path}: docs-test directives at the end of the file precede no block")
    return blocks


def document_blocks(path: str, text: str | None = None) -> list[Block]:
    """The blocks of one document of the repository (``text`` replaces the file's contents)."""
    return parse_blocks((REPO / path).read_text() if text is None else text, path)


def unclassified(blocks: list[Block]) -> list[str]:
    """``path:line: why`` for each block whose directives do not say what it is."""
    problems = []
    for block in blocks:
        roles = [kind for kind, _ in block.directives if kind in ROLES]
        if block.generated_by is not None:
            continue
        if not roles:
            problems.append(f"{block.where}: a ```{block.lang} block without a docs-test directive "
                            f"(run, output, output-of, console, save-as or skip: REASON)")
        elif len(roles) > 1:
            problems.append(f"{block.where}: a block is one of run, output, console, save-as, skip; "
                            f"it says {', '.join(roles)}")
        elif block.role == "run" and block.lang not in ("bash", "python", ""):
            problems.append(f"{block.where}: only bash and python blocks run, not ```{block.lang}")
        elif block.has("continues") and block.lang != "python":
            problems.append(f"{block.where}: only python blocks continue a previous block")
        for kind, argument in block.directives:
            if kind != "skip-command":
                continue
            pattern = argument.partition(": ")[0].strip()
            commands = commands_of(block) if block.role == "run" else []
            if not any(block.skip_reason(command) for command in commands
                       if command == pattern or command.startswith(pattern.removesuffix("..."))):
                problems.append(f"{block.where}: skip-command {pattern!r} matches no command of the block")
    return problems


# ----------------------------------------------------------------------------------------------
# Shown output against actual output
# ----------------------------------------------------------------------------------------------

#: The normalisation applied to both sides, in order; each (pattern, replacement, why).
NORMALISATION = (
    # Wall times vary from run to run: "7.74 s", "0.6 ms", "0.03s", with the padding that
    # right-aligns them in a column.
    (re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?(?:ms|s)\b"), "<time>", "times"),
    # Versions of the tools the output names vary with the installed packages.
    (re.compile(r"\b(tf2onnx|tensorrt_rtx|tensorrt|onnxruntime|onnx|trtcompile|TensorRT-RTX|TensorRT)"
                r" \d+(?:\.\d+)+\b"), r"\1 <version>", "versions"),
    # Rounding errors (below 1e-4, printed in e-notation) depend on the CPU's instruction set.
    (re.compile(r"(?<![\w.])\d(?:\.\d+)?e-(?:0[5-9]|[1-9]\d)\b"), "<rounding>", "rounding errors"),
    # Hashes and fingerprints.
    (re.compile(r"\b[0-9a-f]{16,}\b"), "<hash>", "hashes"),
)


def normalise(line: str, workspace: str | None = None) -> str:
    """One line with times, versions, rounding errors, hashes and the workspace's path replaced,
    trailing spaces removed and every run of spaces made one (columns, and the indentation of a
    column's continuation lines, follow the width of what was replaced)."""
    if workspace:
        line = line.replace(workspace + "/", "").replace(workspace, ".")
    for pattern, replacement, _ in NORMALISATION:
        line = pattern.sub(replacement, line)
    return re.sub(r" {2,}", " ", line.rstrip())


def _line_matches(shown: str, got: str) -> bool:
    """Equal, or equal but for what a ``...`` inside the shown line stands for (any text)."""
    if "..." not in shown:
        return shown == got
    pattern = ".*".join(re.escape(part) for part in shown.split("..."))
    return re.fullmatch(pattern, got) is not None


def _lines_match(shown: list[str], got: list[str]) -> bool:
    """Whether each shown line matches the output line at its place."""
    return len(shown) == len(got) and all(map(_line_matches, shown, got))


def _chunks(shown: list[str]) -> list[list[tuple[int, str]]]:
    """Shown lines split at ``...`` lines: runs of (index in shown, line) that must be contiguous."""
    chunks: list[list[tuple[int, str]]] = [[]]
    for index, line in enumerate(shown):
        if line.strip() == "...":
            chunks.append([])
        else:
            chunks[-1].append((index, line))
    return chunks


def compare_output(shown: list[str], actual: str, where: str, first_line: int, *,
                   excerpt: bool = False, workspace: str | None = None) -> str | None:
    """None when ``actual`` shows what ``shown`` says, else a message naming the first shown line
    that is not in the output (``path:line``), with that part of the output.

    A shown line ``...`` stands for any number of lines, ``...`` inside a line for any text; the
    lines between two ``...`` lines must appear in this order and next to each other. Without ``excerpt``, the shown output starts at the
    output's first line and ends at its last (a leading or trailing ``...`` lifts that).
    ``first_line`` is the file line of ``shown[0]``.
    """
    expected = [normalise(line) for line in shown]
    while expected and not expected[-1].strip():
        expected.pop()
    got = [normalise(line, workspace) for line in actual.rstrip("\n").split("\n")]
    chunks = _chunks(expected)
    if excerpt:
        chunks = [[], *chunks, []]
    position = 0
    for number, chunk in enumerate(chunks):
        anchored_start = number == 0
        anchored_end = number == len(chunks) - 1
        texts = [line for _, line in chunk]
        candidates = [position] if anchored_start else range(position, len(got) - len(texts) + 1)
        if anchored_end:
            candidates = [start for start in candidates if start == len(got) - len(texts)]
        found = next((start for start in candidates if _lines_match(texts, got[start:start + len(texts)])),
                     None)
        if found is None and anchored_end and texts:
            starts = [position] if anchored_start else range(position, len(got) - len(texts) + 1)
            early = next((start for start in starts
                          if _lines_match(texts, got[start:start + len(texts)])), None)
            if early is not None:
                return (f"{where}: the output goes on after the shown output's last line "
                        f"({where.split(':')[0]}:{first_line + chunk[-1][0]}; add a '...' line "
                        f"after it if that is intended):\n  "
                        + "\n  ".join(got[early + len(texts):early + len(texts) + 5]))
        if found is None:
            return _mismatch(chunk, got, position, where, first_line, anchored_start, anchored_end)
        position = found + len(texts)
    return None


def _mismatch(chunk, got, position, where, first_line, anchored_start, anchored_end) -> str:
    """The message for a chunk that is not in the output: its longest prefix that is, then the
    first line that differs."""
    if not chunk:
        extra = got[position:position + 5] if anchored_end else got[:5]
        return (f"{where}: the output {'goes on after' if anchored_end else 'starts before'} the "
                f"shown output (add a '...' line there if that is intended):\n  "
                + "\n  ".join(extra))
    starts = [position] if anchored_start else range(position, len(got))
    best_start, best_length = position, -1
    for start in starts:
        length = 0
        while (length < len(chunk) and start + length < len(got)
               and _line_matches(chunk[length][1], got[start + length])):
            length += 1
        if length > best_length:
            best_start, best_length = start, length
    index, line = chunk[min(best_length, len(chunk) - 1)]
    near = got[best_start + best_length:best_start + best_length + 3] or ["<end of output>"]
    return (f"{where}: shown output differs at {where.split(':')[0]}:{first_line + index}:\n"
            f"  shown:  {line.strip()!r}\n  output: " + "\n          ".join(repr(n.strip()) for n in near))


def console_parts(block: Block) -> list[tuple[str, list[str], int]]:
    """The ``$ command`` lines of a console block: (command, shown output lines, file line of the
    first output line)."""
    parts: list[tuple[str, list[str], int]] = []
    for offset, line in enumerate(block.lines):
        if line.startswith("$ "):
            parts.append((line[2:], [], block.line + offset + 2))
        elif parts:
            parts[-1][1].append(line)
        else:
            raise DirectiveError(f"{block.where}: a console block starts with '$ command'")
    return parts


def commands_of(block: Block) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and blank lines dropped,
    ``a && b`` split into two."""
    joined: list[str] = []
    carry = ""
    for line in block.lines:
        line = carry + line
        if line.rstrip().endswith("\\"):
            carry = line.rstrip()[:-1] + " "
            continue
        carry = ""
        joined.append(line)
    commands = []
    for line in joined:
        code = _strip_comment(line).strip()
        commands.extend(part.strip() for part in code.split(" && ") if part.strip())
    return commands


def _strip_comment(line: str) -> str:
    """The line without a ``#`` comment (a ``#`` inside quotes is kept)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line
