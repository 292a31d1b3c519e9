"""The ``dynscale`` command line: a shell over the registered methods.

Every method adds its own commands (``dynscale.methods``); the shell adds the commands that
work on any run (``commands.py``). Every option is checked by type and range as it is parsed,
and every command checks its inputs and outputs before any work. A user's mistake prints one
line naming the option and exits 2; a bug prints one line that says so and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from .. import __version__
from ..command import Parser
from ..errors import DynscaleError, TrainingInterrupted
from ..files import release_outputs
from ..methods import list_methods
from ..parallel import FollowerError, setup, teardown
from ..progress import set_quiet
from . import commands


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dynscale`` command: each registered method's commands,
    then the shell's own."""
    parser = Parser(prog="dynscale", description="Dynamic computation scaling for PyTorch networks: train one "
                    "network, scale its cost at run time, measure what it saves.")
    parser.add_argument("--version", action="version", version=f"dynscale {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    for method in list_methods():
        if method.add_commands is not None:
            method.add_commands(sub)
    commands.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    import torch

    args = build_parser().parse_args(argv)
    threads = torch.get_num_threads()  # a command's --threads lasts as long as the command
    world = setup()  # under torchrun: one process group; rank 0 alone prints and writes
    say = print if world.main else (lambda *a, **k: None)
    try:
        with contextlib.ExitStack() as stack:
            if not world.main:
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
            if world.distributed and not getattr(args, "trains", False):
                raise DynscaleError(f"`dynscale {args.command}` does not train, so it gains nothing from "
                                    f"{world.size} processes; run it without torchrun")
            commands.prepare(args)
            args.func(args)
    except FollowerError:
        return 2  # rank 0 failed first and says why
    except (DynscaleError, ValueError, OSError) as e:
        if os.environ.get("DYNSCALE_DEBUG"):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        say(f"dynscale: error: {message}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        say(f"dynscale: interrupted: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        say("dynscale: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: still one line, with a way to see more
        if os.environ.get("DYNSCALE_DEBUG"):
            raise
        print(f"dynscale: internal error (a bug in dynscale, please report it): {type(e).__name__}: "
              f"{' '.join(str(e).split())} (rerun with DYNSCALE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    finally:
        torch.set_num_threads(threads)
        set_quiet(False)
        release_outputs()  # the outputs a failed command claimed but never wrote
        teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
