"""A job script's `#SBATCH` header, read as sbatch 22.05-24.11 reads it (src/sbatch/opt.c:
`_opt_batch_script`, `get_argument`), so that the directives the gateway prices are exactly
those sbatch would have applied.

sbatch's rules, kept here:
- Lines are split on `\\n` only. A line that begins (column 0, case-sensitive) with `#SBATCH` or
  `#SLURM` is a directive line; a blank line or one whose first non-blank character is `#` is a
  comment; the first other line is a command and ends the header. `  #SBATCH` and `#sbatch` are
  comments, not directives.
- The words of a directive line: blanks separate them; `'` and `"` quote (and are dropped); a
  backslash keeps the next character as written (in quotes too); an unquoted `#` starts a
  comment; an empty word (`''`) ends the line; an unmatched quote is fatal.
- A line whose first word is `hetjob` or `packjob` (any case) separates the components of a
  heterogeneous job; a `:` word is fatal.
- The words of every line are then one argv for getopt_long: an option's value may be the next
  word (even on the next line), short options group (`-c4`), a long option can be abbreviated.
- sbatch also translates `#PBS` and `#BSUB` lines (anywhere in the first 100 commands) unless
  `--ignore-pbs` is given; the gateway always gives it and refuses those lines in the header.

Only an allow-list is taken (what the gateway prices or places); everything else is refused with
its line number, and `neutralised` turns every directive line of the header into a plain comment
before the script is sent, so no line of a script ever reaches sbatch's option parser.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from consortium.texts import Sentence, translatable

DIRECTIVE_PREFIXES = ("#SBATCH", "#SLURM")
WRAPPER_PREFIXES = ("#PBS", "#BSUB")
_SPACE = " \t\n\v\f\r"  # C's isspace
_SEPARATORS = ("hetjob", "packjob")
# ASCII digits only (`\d` and str.isdigit take `٣` and `²`); 18 of them at most, far above
# every bound, and below the length int() refuses with its own message
_DIGITS = "[0-9]{1,18}"
_NUMBER = re.compile(_DIGITS)
_GRES_GPU = re.compile(f"gpu(?::({_DIGITS}))?")
_MEMORY = re.compile(f"({_DIGITS})([KMGTkmgt]?)")
_MIB_PER_UNIT = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 ** 2}


@dataclass(frozen=True)
class _Option:
    name: str  # the long name, as sbatch spells it
    short: str | None


# the options taken: long name -> short letter; all of them need a value
ALLOWED = {o.name: o for o in (
    _Option("time", "t"), _Option("nodes", "N"), _Option("ntasks", "n"),
    _Option("cpus-per-task", "c"), _Option("mem", None), _Option("mem-per-cpu", None),
    _Option("gres", None), _Option("gpus", "G"), _Option("partition", "p"),
    _Option("job-name", "J"), _Option("array", "a"), _Option("output", "o"),
    _Option("error", "e"))}
_BY_SHORT = {o.short: o for o in ALLOWED.values() if o.short}
_ALLOWED_TEXT = ", ".join(f"--{name}" for name in ALLOWED)

_WIDENS = translatable("it widens the job beyond its quote")
_GATEWAYS = translatable("the gateway sets it")
_WEBHOOKS = translatable("the gateway sends no mail from Slurm (use webhooks)")
_ENVIRONMENT = translatable("the gateway sets it (give variables in `environment`)")
_WORKDIR = translatable("the gateway sets it (give `workdir`)")
_QUOTE_FROM_SUBMISSION = translatable("the gateway holds a job's quote from its submission")
_PRIORITY = translatable("priority is the cluster's to set")
# why the usual suspects are refused (every other option gets the generic reason)
_REASONS = {
    "exclusive": _WIDENS, "overcommit": _WIDENS, "oversubscribe": _WIDENS,
    "ntasks-per-node": _WIDENS, "ntasks-per-socket": _WIDENS, "ntasks-per-core": _WIDENS,
    "ntasks-per-gpu": _WIDENS, "gpus-per-node": _WIDENS, "gpus-per-task": _WIDENS,
    "gpus-per-socket": _WIDENS, "cpus-per-gpu": _WIDENS, "mem-per-gpu": _WIDENS,
    "mincpus": _WIDENS, "tres-per-task": _WIDENS, "licenses": _WIDENS, "core-spec": _WIDENS,
    "thread-spec": _WIDENS, "sockets-per-node": _WIDENS, "cores-per-socket": _WIDENS,
    "threads-per-core": _WIDENS, "extra-node-info": _WIDENS, "tmp": _WIDENS,
    "account": translatable("the gateway sets it (the member's account on the cluster)"),
    "comment": translatable("the gateway sets it (it carries the job's marker)"),
    "qos": translatable("the gateway sets it (the partition's)"),
    "reservation": translatable("the gateway sets it (none)"),
    "export": _ENVIRONMENT, "export-file": _ENVIRONMENT, "chdir": _WORKDIR, "workdir": _WORKDIR,
    "input": _GATEWAYS, "mail-type": _WEBHOOKS, "mail-user": _WEBHOOKS,
    "dependency": translatable("the gateway submits each job on its own"),
    "begin": _QUOTE_FROM_SUBMISSION, "hold": _QUOTE_FROM_SUBMISSION,
    "deadline": _QUOTE_FROM_SUBMISSION, "nice": _PRIORITY, "priority": _PRIORITY,
    "requeue": translatable("a requeued job runs again beyond its quote"),
    "clusters": translatable("the cluster is chosen by the request's `cluster`"),
    "wrap": translatable("the script is the job"), "parsable": _GATEWAYS, "ignore-pbs": _GATEWAYS,
    "test-only": _GATEWAYS, "wait": _GATEWAYS, "uid": _GATEWAYS, "gid": _GATEWAYS,
}
_SHORT_NAMES = {"A": "account", "b": "begin", "d": "dependency", "D": "chdir", "H": "hold",
                "i": "input", "M": "clusters", "O": "overcommit", "q": "qos",
                "s": "oversubscribe", "W": "wait", "B": "extra-node-info", "L": "licenses"}


@dataclass(frozen=True)
class Directive:
    """One option of the header, as written, with the line it starts on."""

    line: int
    option: str  # `--cpus-per-task` or `-c`
    value: str


@dataclass
class FromScript:
    """What a script's directives ask for. `resources` holds ResourcesIn fields; the others
    wait for the merge with the request: `mem_mb_per_node` (`--mem`, per node in Slurm),
    `mem_mb_per_cpu`, `gpus_per_node` (`--gres`, per node). `lines` gives each field's line."""

    resources: dict[str, int | str] = field(default_factory=dict)
    mem_mb_per_node: int | None = None
    mem_mb_per_cpu: int | None = None
    gpus_per_node: int | None = None
    name: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    lines: dict[str, int] = field(default_factory=dict)


class DirectivesRefused(ValueError):
    """Lines of the header the gateway does not take; each problem names its line."""

    def __init__(self, problems: list[Sentence]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _header(lines: list[str]) -> tuple[list[tuple[int, str]], int]:
    """(index, text after the prefix) of each directive line of the header, and the index of
    the header's end (its first command)."""
    found = []
    for index, line in enumerate(lines):
        prefix = next((p for p in DIRECTIVE_PREFIXES if line.startswith(p)), None)
        if prefix is not None:
            found.append((index, line[len(prefix):]))
        elif line.strip(_SPACE)[:1] not in ("", "#"):
            return found, index
    return found, len(lines)


def neutralised(script: str) -> str:
    """The script with each directive line of its header made a comment (`##SBATCH ...`), so
    that sbatch reads no option from it; every other byte is kept."""
    lines = script.split("\n")
    for index, _ in _header(lines)[0]:
        lines[index] = "#" + lines[index]
    return "\n".join(lines)


def _words(text: str, line: int) -> tuple[list[str], Sentence | None]:
    """The words sbatch takes from a directive line (after its prefix), or the problem."""
    words: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _SPACE:
            i += 1
        if i == n:
            return words, None
        rest = text[i:]
        for separator in _SEPARATORS:
            if rest[:len(separator)].lower() == separator and rest[len(separator):][:1] in (
                    "", *_SPACE):
                return words, Sentence(
                    "line %(line)s: `%(separator)s` separates the components of a "
                    "heterogeneous job; the gateway submits one job per request", line=line,
                    separator=separator)
        if text[i] == ":":
            return words, Sentence("line %(line)s: sbatch cannot read `:` here", line=line)
        word, i, quote = _word(text, i)
        if quote:
            return words, Sentence("line %(line)s: unmatched %(quote)s", line=line, quote=quote)
        if not word:
            return words, None  # sbatch stops reading the line at an empty word
        words.append(word)


def _word(text: str, i: int) -> tuple[str, int, str]:
    """The word starting at `i`, where the next one may start, and the quote left open."""
    word: list[str] = []
    quote, escaped, n = "", False, len(text)
    while i < n and (quote or text[i] not in _SPACE):
        c = text[i]
        i += 1
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
            continue
        elif quote:
            if c == quote:
                quote = ""
                continue
        elif c in "\"'":
            quote = c
            continue
        elif c == "#":
            return "".join(word), n, ""  # the rest of the line is a comment
        word.append(c)
    return "".join(word), i, quote


def directives(script: str) -> list[Directive]:
    """The options of the script's header, in order, each with its value; DirectivesRefused
    lists every line that cannot be taken (an option outside the allow-list among them)."""
    lines = script.split("\n")
    problems: list[Sentence] = []
    words: list[tuple[int, str]] = []
    header, end = _header(lines)
    for index, text in header:
        found, problem = _words(text, index + 1)
        words.extend((index + 1, w) for w in found)
        if problem:
            problems.append(problem)
    for index, text in enumerate(lines[:end]):
        if text.startswith(WRAPPER_PREFIXES):
            problems.append(Sentence(
                "line %(line)s: %(prefix)s directives are not taken (write #SBATCH lines); "
                "allowed: %(allowed)s", line=index + 1, prefix=text.split()[0],
                allowed=_ALLOWED_TEXT))
    found_options: list[Directive] = []
    position = 0
    while position < len(words):
        line, word = words[position]
        position += 1
        option, value, problem = _option(word)
        if problem is not None:
            problems.append(Sentence("line %(line)s: %(problem)s", line=line, problem=problem))
            while position < len(words) and not words[position][1].startswith("-"):
                position += 1  # its value, if it takes one: reported once, with the option
            continue
        if value is None:
            if position == len(words):
                problems.append(Sentence("line %(line)s: %(option)s needs a value", line=line,
                                         option=word))
                continue
            value = words[position][1]
            position += 1
        found_options.append(Directive(line, option, value))
    if problems:
        raise DirectivesRefused(problems)
    return found_options


def _option(word: str) -> tuple[str, str | None, Sentence | None]:
    """(the option as written, its value if in the same word, the problem if refused)."""
    if word.startswith("--") and len(word) > 2:
        name, equals, value = word[2:].partition("=")
        if name in ALLOWED:
            return f"--{name}", value if equals else None, None
        return word, None, _refusal(f"--{name}", name)
    if word.startswith("-") and len(word) > 1 and word != "--":
        letter, rest = word[1], word[2:]
        allowed = _BY_SHORT.get(letter)
        if allowed is not None:
            return f"-{letter}", rest or None, None
        return word, None, _refusal(f"-{letter}", _SHORT_NAMES.get(letter))
    return word, None, Sentence("`%(word)s` is not an option (sbatch would refuse the script)",
                                word=word)


def _refusal(written: str, name: str | None) -> Sentence:
    if name is not None and name not in ALLOWED and any(a.startswith(name) for a in ALLOWED):
        return Sentence("#SBATCH %(option)s is not allowed: write the option's full name",
                        option=written)
    reason = _REASONS.get(name or "", translatable("the gateway does not take it"))
    return Sentence("#SBATCH %(option)s is not allowed: %(reason)s; allowed: %(allowed)s",
                    option=written, reason=Sentence(reason), allowed=_ALLOWED_TEXT)


def from_script(script: str) -> FromScript:
    """The resources, name and output files the script's header asks for (the last of an
    option wins, as in sbatch); DirectivesRefused lists every line not taken."""
    asked = FromScript()
    problems: list[Sentence] = []
    for d in directives(script):
        name = _BY_SHORT[d.option[1]].name if len(d.option) == 2 else d.option[2:]
        try:
            _apply(asked, name, d.value.strip(_SPACE) if name not in ("job-name",) else d.value)
        except ValueError as exc:
            written = f"{d.option}={d.value}" if d.option.startswith("--") else (
                f"{d.option} {d.value}")
            reason = exc.args[0] if exc.args else str(exc)
            problems.append(Sentence("line %(line)s: #SBATCH %(option)s: %(problem)s",
                                     line=d.line, option=written, problem=reason))
            continue
        asked.lines[name] = d.line
    for first, second in (("mem", "mem-per-cpu"), ("gres", "gpus")):
        if first in asked.lines and second in asked.lines:
            problems.append(Sentence(
                "line %(line)s: --%(first)s and --%(second)s exclude each other",
                line=max(asked.lines[first], asked.lines[second]), first=first, second=second))
    if problems:
        raise DirectivesRefused(problems)
    return asked


def _apply(asked: FromScript, name: str, value: str) -> None:
    match name:
        case "time":
            asked.resources["time_limit_minutes"] = minutes(value)
        case "nodes" | "ntasks" | "cpus-per-task":
            asked.resources[name.replace("-", "_")] = _count(value)
        case "mem":
            asked.mem_mb_per_node = mebibytes(value)
        case "mem-per-cpu":
            asked.mem_mb_per_cpu = mebibytes(value)
        case "gres":
            asked.gpus_per_node = _gres_gpus(value)
        case "gpus":
            asked.resources["gpus"] = _gpus(value)
        case "partition":
            if "," in value:
                raise ValueError(Sentence("name one partition"))
            asked.resources["partition"] = value
        case "array":
            asked.resources["array"] = value
        case "job-name":
            asked.name = value
        case "output":
            asked.stdout = value
        case "error":
            asked.stderr = value


def whole_number(text: str) -> int | None:
    """`text` as a whole number written in ASCII digits, or None."""
    return int(text) if _NUMBER.fullmatch(text) else None


def _count(value: str) -> int:
    count = whole_number(value)
    if count is None:
        raise ValueError(Sentence("give one whole number (no range)"))
    return count


def minutes(value: str) -> int:
    """sbatch's time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) as minutes, rounded up."""
    days, dash, clock = value.rpartition("-") if "-" in value else ("", "", value)
    parts = clock.split(":")
    numbers = [n for n in map(whole_number, parts) if n is not None]
    day_count = whole_number(days) if dash else 0
    if len(numbers) != len(parts) or day_count is None or len(parts) > 3:
        raise ValueError(Sentence("use minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"))
    if dash:  # D-HH[:MM[:SS]]
        hours, mins, secs = [*numbers, 0, 0][:3]
        hours += day_count * 24
    elif len(numbers) == 3:  # H:M:S
        hours, mins, secs = numbers
    else:  # M or M:S
        hours, (mins, secs) = 0, [*numbers, 0][:2]
    seconds = (hours * 60 + mins) * 60 + secs
    if seconds == 0:
        raise ValueError(Sentence("a time of 0 means no limit in Slurm; give a limit"))
    return math.ceil(seconds / 60)


def mebibytes(value: str) -> int:
    """A Slurm size (a number with K, M, G or T; M when none) in MiB, rounded up."""
    found = _MEMORY.fullmatch(value)
    if not found:
        raise ValueError(Sentence("use a whole number with K, M, G or T (M when none)"))
    amount = int(found[1]) * _MIB_PER_UNIT[(found[2] or "m").lower()]
    if amount == 0:
        raise ValueError(Sentence("0 means all the memory of the node in Slurm; give a size"))
    return math.ceil(amount)


def _gres_gpus(value: str) -> int:
    found = _GRES_GPU.fullmatch(value)
    if not found:
        raise ValueError(Sentence("only `gpu` or `gpu:N` is taken (GPUs are counted, not typed)"))
    return int(found[1]) if found[1] is not None else 1


def _gpus(value: str) -> int:
    count = whole_number(value)
    if count is None:
        raise ValueError(Sentence("only a count is taken (GPUs are counted, not typed)"))
    return count
