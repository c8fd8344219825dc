"""The one command-line convention every script follows.

    uv run scripts/<script>.py <config name> [--field=value ...]      (scripts with a config registry)
    uv run scripts/<script>.py [--field=value ...]                    (scripts without one)

- Flags are tyro's (`--batch-size 4`), and the community spellings work too: `--batch_size=4` is the same
  flag, and every boolean accepts `--flag`, `--no-flag`, `--no_flag` and `--flag=true/false/1/0/yes/no`
  (`--flag true` as two words as well). Which flags are booleans is read from the dataclass, so no script
  keeps its own list and the rules cannot drift apart again.
- `-h` or `--help` before a config name print the usage and the config names and exit 0; no arguments at all
  print the same to stderr and exit 2 (nothing was asked for that could run); `<config> --help` prints tyro's
  usage for that config and exits 0.
- An unknown config name, an unknown flag or a bad value is a `errors.ConfigError` with one sentence (tyro's
  boxed message is reduced to its first line, plus the flag it suggests); `run` logs it and exits 2 without a
  traceback, like every other `errors.UserError`.
"""

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
import contextlib
import dataclasses
import io
import logging
import pathlib
import re
import sys
import types
import typing
from typing import Any
from typing import TypeVar

import tyro

from openpi.shared import errors
from openpi.shared import registry as _registry

T = TypeVar("T")
R = TypeVar("R")

TRUE_WORDS = ("1", "true", "yes")
FALSE_WORDS = ("0", "false", "no")
NONE_WORDS = ("none",)

logger = logging.getLogger("openpi.cli")


# ------------------------------------------------------------------------------------------- booleans


@dataclasses.dataclass(frozen=True)
class BoolFlags:
    """The boolean flags of a dataclass, by tyro's dashed name (`--use-ema`, `--model.pistar`).

    `plain` are `bool` fields (tyro: `--flag` / `--no-flag`); `optional` are `bool | None` fields (tyro: `--flag
    True|False|None`), which the normaliser lets users spell like plain ones.
    """

    plain: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()


def _unwrap(tp: Any) -> Any:
    """`Annotated[X, ...]` -> X (tyro markers such as `tyro.conf.Suppress` are Annotated)."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_suppressed(tp: Any) -> bool:
    return typing.get_origin(tp) is typing.Annotated and any(
        "Suppress" in repr(marker) for marker in typing.get_args(tp)[1:]
    )


def bool_flags(cls: type | Any) -> BoolFlags:
    """Boolean flags of the dataclass (or dataclass instance, whose nested defaults pick the subclasses tyro
    shows) `cls`, nested dataclass fields included with tyro's dotted prefix."""
    plain: set[str] = set()
    optional: set[str] = set()

    def walk(obj: Any, prefix: str) -> None:
        klass = obj if isinstance(obj, type) else type(obj)
        try:
            hints = typing.get_type_hints(klass, include_extras=True)
        except Exception:  # an unresolvable annotation only loses the boolean spellings
            return
        for field in dataclasses.fields(klass):
            hint = hints.get(field.name, field.type)
            if _is_suppressed(hint):
                continue
            tp = _unwrap(hint)
            name = prefix + field.name.replace("_", "-")
            args = {_unwrap(a) for a in typing.get_args(tp)}
            is_union = typing.get_origin(tp) in (typing.Union, types.UnionType)
            if tp is bool:
                plain.add(name)
            elif is_union and args == {bool, type(None)}:
                optional.add(name)
            else:
                value = getattr(obj, field.name, None) if not isinstance(obj, type) else None
                if value is not None and dataclasses.is_dataclass(value):
                    walk(value, name + ".")
                elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
                    walk(tp, name + ".")

    walk(cls, "--")
    return BoolFlags(frozenset(plain), frozenset(optional))


def _truth(flag: str, value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise errors.ConfigError(f"{flag} takes true or false (or 1/0, yes/no), got {value!r}.")


def _negated(name: str) -> str | None:
    """`--no-use-ema` -> `--use-ema`, `--model.no-pistar` -> `--model.pistar`; None when not a negation."""
    head, dot, leaf = name[2:].rpartition(".")
    if not leaf.startswith("no-"):
        return None
    return "--" + head + dot + leaf[3:]


def _negate(name: str) -> str:
    head, dot, leaf = name[2:].rpartition(".")
    return "--" + head + dot + "no-" + leaf


def normalize_flags(args: Sequence[str], flags: BoolFlags = BoolFlags()) -> list[str]:
    """Community spellings -> tyro's: `--batch_size=4` == `--batch-size 4`; for the booleans in `flags`,
    `--flag`, `--no-flag` and `--flag=<true/false/1/0/yes/no>` (or `--flag <word>`) all work, and `bool | None`
    fields also take `none`/`None`.

    Anything after a bare `--` is passed through untouched.
    """
    out: list[str] = []
    i = 0
    args = list(args)
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            out.extend(args[i - 1 :])
            break
        if not arg.startswith("--"):
            out.append(arg)
            continue
        name, sep, value = arg.partition("=")
        name = name.replace("_", "-")
        positive = _negated(name)
        negated = positive is not None and (positive in flags.plain or positive in flags.optional)
        base = positive if negated else name
        if base not in flags.plain and base not in flags.optional:
            out.append(name + sep + value)
            continue
        if negated and sep:
            raise errors.ConfigError(f"{name} takes no value; write {base}={value} or {name} alone.")
        # `bool | None` fields also take `none` (tyro's `--flag None`: e.g. "use the checkpoint's setting").
        words = TRUE_WORDS + FALSE_WORDS + (NONE_WORDS if base in flags.optional else ())
        if not sep and not negated and i < len(args) and args[i].strip().lower() in words:
            sep, value = "=", args[i]  # `--use_ema false`, as argparse-style scripts accept
            i += 1
        if sep and base in flags.optional and value.strip().lower() in NONE_WORDS:
            out.extend([base, "None"])
            continue
        truth = (not negated) if not sep else _truth(base, value)
        if base in flags.plain:
            out.append(base if truth else _negate(base))
        else:
            out.extend([base, str(truth)])
    return out


# ---------------------------------------------------------------------------------------------- parsing

_RULES = "-─━╭╮╰╯┏┓┗┛ "


def _one_line(tyro_stderr: str) -> str:
    """tyro's boxed error -> its message on one line, plus the first flag it suggests ("Perhaps you meant").

    tyro draws the box with UTF-8 lines when stdout is UTF-8 and with dashes otherwise (e.g. under pytest's
    capture); both read as: a title line, then sections split by separator lines, the message first.
    """
    lines = [line.strip(" \t│┃") for line in tyro_stderr.splitlines()]
    lines = [line for line in lines if line][1:]  # the first one is the title ("Value error")
    sections: list[list[str]] = [[]]
    for line in lines:
        if set(line) <= set(_RULES):
            sections.append([])
        else:
            sections[-1].append(line)
    sections = [section for section in sections if section]
    if not sections:
        return "invalid arguments"
    message = " ".join(sections[0]).rstrip(".")
    for section in sections[1:]:
        if section[0] == "Perhaps you meant:":
            flags = [line.split()[0].rstrip(",") for line in section[1:] if line.startswith("-")]
            if flags:
                message += f" (did you mean {flags[0]}?)"
    return message


def parse(
    cls: type[T],
    args: Sequence[str],
    *,
    default: T | None = None,
    prog: str | None = None,
    description: str | None = None,
    config: Sequence[Any] = (),
) -> T:
    """tyro on `cls` with the normalised `args`; `--help` prints usage and exits 0, and a bad flag or value
    raises ConfigError with one sentence instead of tyro's box."""
    prog = prog or pathlib.Path(sys.argv[0]).name
    args = normalize_flags(args, bool_flags(default if default is not None else cls))
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(
                cls, args=args, default=default, prog=prog, description=description, config=tuple(config) or None
            )
    except SystemExit as e:
        if e.code in (0, None):
            raise
        message = _one_line(captured.getvalue())
        if not message.startswith("Unrecognized") and not config:
            # tyro reports missing required arguments before unknown flags; a typo is the likelier mistake.
            message = _unrecognized(default if default is not None else cls, args) or message
        raise errors.ConfigError(f"{message}; run `{prog} --help` for the flags.") from None


def _unrecognized(cls: type | Any, args: Sequence[str]) -> str | None:
    """tyro's "Unrecognized options: ..." sentence for the `--flags` in `args` that no field of the dataclass `cls`
    (nested fields under their dotted prefix) can take, with the nearest flag for the first; None when all fit."""
    known: set[str] = set()
    open_prefixes: set[str] = set()  # fields whose sub-flags are not listed here (unions, subcommands)

    def walk(obj: Any, prefix: str) -> None:
        klass = obj if isinstance(obj, type) else type(obj)
        if not dataclasses.is_dataclass(klass):
            open_prefixes.add(prefix)
            return
        try:
            hints = typing.get_type_hints(klass, include_extras=True)
        except Exception:
            open_prefixes.add(prefix)
            return
        for field in dataclasses.fields(klass):
            hint = hints.get(field.name, field.type)
            tp = _unwrap(hint)
            name = prefix + field.name.replace("_", "-")
            known.update({name, _negate(name)})
            value = getattr(obj, field.name, None) if not isinstance(obj, type) else None
            if value is not None and dataclasses.is_dataclass(value):
                walk(value, name + ".")
            elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
                walk(tp, name + ".")
            elif tp is not bool:
                open_prefixes.add(name + ".")

    walk(cls, "--")
    if "--" in open_prefixes:
        return None  # not a dataclass: nothing to check against
    unknown = []
    for arg in args:
        if arg == "--":
            break
        name = arg.partition("=")[0]
        if not name.startswith("--") or name == "--help" or name in known:
            continue
        if not any(name.startswith(p) for p in open_prefixes):
            unknown.append(name)
    if not unknown:
        return None
    import difflib

    nearest = next((m[0] for u in unknown if (m := difflib.get_close_matches(u, sorted(known), n=1, cutoff=0.8))), None)
    return f"Unrecognized options: {', '.join(unknown)}" + (f" (did you mean {nearest}?)" if nearest else "")


def _print_usage(prog: str, names: Sequence[str], kind: str, description: str | None, file: Any = None) -> None:
    lines = [f"usage: {prog} <{kind} name> [--field=value ...]"]
    if description:
        lines += ["", description.strip()]
    lines += ["", f"{kind[0].upper() + kind[1:]}s (`{prog} <name> --help` lists a config's flags):"]
    lines += [f"  {name}" for name in names]
    print("\n".join(lines), file=file or sys.stdout)


def split_name(
    registry: Mapping[str, T],
    args: Sequence[str],
    *,
    kind: str,
    prog: str | None = None,
    description: str | None = None,
) -> tuple[str, T, list[str]]:
    """`<config name> [flags]` -> (name, registered config, flags).

    `-h`/`--help` first prints the usage and the names and exits 0. No arguments prints them to stderr and exits 2,
    like a bad flag: a script that needs a config name was not told what to run, which a caller checking the exit
    status must see. A flag before the name or an unknown name raises ConfigError (the latter with the nearest
    names).
    """
    prog = prog or pathlib.Path(sys.argv[0]).name
    args = list(args)
    if not args:
        _print_usage(prog, list(registry), kind, description, file=sys.stderr)
        raise SystemExit(2)
    if args[0] in ("-h", "--help"):
        _print_usage(prog, list(registry), kind, description)
        raise SystemExit(0)
    if args[0].startswith("-"):
        raise errors.ConfigError(
            f"Name a {kind} first, then flags (got {args[0]!r} first); run `{prog} --help` for the names."
        )
    name = args[0]
    return name, _registry.lookup(dict(registry), name, kind), args[1:]


def parse_named(
    registry: Mapping[str, T],
    args: Sequence[str],
    *,
    kind: str,
    cls: type[T] | None = None,
    prog: str | None = None,
    description: str | None = None,
) -> T:
    """`<config name> [--field=value ...]` -> the registered config with tyro's overrides applied."""
    prog = prog or pathlib.Path(sys.argv[0]).name
    name, config, rest = split_name(registry, args, kind=kind, prog=prog, description=description)
    cls = cls or type(config)
    return parse(cls, rest, default=config, prog=f"{prog} {name}", description=f"{description or ''}\n\n{kind}: {name}")


# ------------------------------------------------------------------------------------------------- main

_NOISY_LOGGERS = ("absl", "jax._src.xla_bridge")


def setup_logging(level: int = logging.INFO) -> None:
    """The one log format of the scripts; absl's and JAX's start-up chatter is kept to warnings."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in _NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(
    fn: Callable[[list[str]], R],
    argv: Sequence[str] | None = None,
    *,
    name: str = "openpi",
    level: int = logging.INFO,
) -> R:
    """Set up logging (at `level`) and call `fn(args)`; a `errors.UserError` is logged as one line and exits 2
    (no traceback), so a user sees what to fix rather than where the code noticed it."""
    setup_logging(level)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return fn(args)
    except errors.UserError as e:
        logging.getLogger(name).error("%s", _single_line(str(e)))
        raise SystemExit(2) from None


def _single_line(message: str) -> str:
    return re.sub(r"\s*\n\s*", " ", message.strip())
