"""The command line: a thin shell over the library. Errors print one line on stderr and exit
2 (usage and config) or 1 (everything else), never a traceback. What a command says goes to
stdout, or to stderr when one of its outputs goes to stdout (-o /dev/stdout): see console.say().

- parser.py: the commands and their options (argparse).
- commands.py: each command: its outputs checked, one library call (workflow.py), its text.
- console.py: where the text goes; outputs refused before any work.
"""

from __future__ import annotations

import os
import sys

from ..errors import ConfigError, QmtikError, UsageError
from .console import Console
from .parser import build_parser

__all__ = ["main", "build_parser", "os_error_line"]


def _stdout_gone() -> None:
    """After a reader has gone (qmtik predict ... | head -c1): if stdout is the broken pipe,
    point it at /dev/null, so that Python's flush at exit finds nowhere to fail."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
    except (OSError, ValueError):
        pass


SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a program its reader left


def os_error_line(exc: OSError) -> str:
    """'FILE: what went wrong' of an OSError, or only what went wrong when it names no file."""
    problem = exc.strerror or str(exc)
    return f"{exc.filename}: {problem}" if exc.filename else problem


def main(argv=None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    Console.stdout_taken = False
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader that has gone shows here, not at exit
        return code
    except BrokenPipeError:  # | head: as cat and grep do, stop without a word
        _stdout_gone()
        return SIGPIPE_EXIT
    except (ConfigError, UsageError) as exc:
        print(f"qmtik: error: {exc}", file=sys.stderr)
        return 2
    except QmtikError as exc:
        print(f"qmtik: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"qmtik: error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qmtik: interrupted (qmtik train --resume goes on from the last checkpoint)", file=sys.stderr)
        return 130
