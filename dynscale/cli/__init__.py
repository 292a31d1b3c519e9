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
from ..parallel import FollowerError, World, launched_rank, launched_size, said_everywhere, setup, teardown
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
    """Runs the command line; returns the exit status.

    Under torchrun (``WORLD_SIZE`` > 1) a training command joins the processes' group and
    rank 0 alone prints its output; another process prints only an error of its own, naming
    its rank. A command that does not train is refused there.
    """
    import torch

    args = build_parser().parse_args(argv)
    threads = torch.get_num_threads()  # a command's --threads lasts as long as the command
    rank, world = launched_rank(), World()

    def say(message: str) -> None:
        print(message if rank == 0 else message.replace("dynscale:", f"dynscale (rank {rank}):", 1), file=sys.stderr)

    code = 0
    try:
        with contextlib.ExitStack() as stack:
            if rank != 0:  # rank 0 alone prints what a command reports
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
            if launched_size() > 1:
                if not getattr(args, "trains", False):
                    raise said_everywhere(f"`dynscale {args.command}` does not train, so it gains nothing from "
                                          "several processes; run it without torchrun")
                world = setup()
            commands.prepare(args)
            args.func(args)
    except FollowerError:
        # Rank 0 fails the launch and says why. A follower that failed first would make torchrun
        # stop rank 0 before it could print, so a follower leaves as if done.
        code = 0
    except (DynscaleError, ValueError, OSError) as e:
        if os.environ.get("DYNSCALE_DEBUG"):
            raise
        say(f"dynscale: error: {' '.join(str(e).split()) or type(e).__name__}")
        code = 2
    except TrainingInterrupted as e:
        if rank == 0:
            say(f"dynscale: interrupted: {e}")
        code = 130
    except KeyboardInterrupt:
        if rank == 0:
            say("dynscale: interrupted")
        code = 130
    except Exception as e:  # a bug, not bad input: still one line, with a way to see more
        if os.environ.get("DYNSCALE_DEBUG"):
            raise
        say(f"dynscale: internal error (a bug in dynscale, please report it): {type(e).__name__}: "
            f"{' '.join(str(e).split())} (rerun with DYNSCALE_DEBUG=1 for the traceback)")
        code = 1
    finally:
        torch.set_num_threads(threads)
        set_quiet(False)
        release_outputs()  # the outputs a failed command claimed but never wrote
        teardown()
    if world.distributed:
        # PyTorch 2.13's gloo sometimes aborts while the interpreter shuts down after a DDP run
        # (a plain DDP script shows it too), turning a finished run into a failed launch: leave
        # at once, with everything flushed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
