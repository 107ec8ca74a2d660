"""The ``ternpe`` command line: one module per command, each with ``add_parser(sub)`` and
``run(args)``.

Only the parser of the command being run is built in full (its help may need the board table,
which imports Amaranth); ``ternpe --help`` lists every command from its one-line ``HELP``.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from . import build, export, flash, generate, qimport, report, run, sim, train, verify

__all__ = ["main", "COMMANDS"]

#: The commands in the order ``ternpe --help`` lists them.
COMMANDS = {m.NAME: m for m in (train, qimport, export, generate, sim, build, verify, flash, run, report)}

_EPILOG = """\
the demo flow (`make demo`, on the 5,000 MNIST digits built in; `make demo BOARD=icebreaker`
goes on to sim and build):
  ternpe train --dataset mnist --out runs/mnist
  ternpe export runs/mnist --out exports/mnist
  ternpe generate exports/mnist --out build/mnist/rtl --device up5k
  ternpe sim exports/mnist --simulator verilator --samples 8
  ternpe build exports/mnist --board icebreaker
  ternpe verify bitstreams/icebreaker/mnist.bin --export exports/mnist --samples 4
  ternpe flash bitstreams/icebreaker/mnist.bin --board icebreaker
  ternpe run --export exports/mnist --board icebreaker --port /dev/ttyUSB1 --golden 4
  ternpe report runs/mnist --export exports/mnist --build bitstreams/icebreaker/mnist.report.json

the quick run on scikit-learn's 8x8 digits (`make demo DATASET=digits`), then the same commands
on exports/digits:
  ternpe train --dataset digits --lam 0.3 --out runs/digits
  ternpe export runs/digits --out exports/digits

run `ternpe COMMAND --help` for each command.
"""


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``ternpe`` parser, with ``command``'s arguments (the others are named only)."""
    p = argparse.ArgumentParser(
        prog="ternpe", allow_abbrev=False,
        description="Ternary, addition-only, PE-wise-sparse neural-network accelerators for open FPGAs.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        if name == command:
            module.add_parser(sub)
        else:
            sub.add_parser(name, help=module.HELP)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((tok for tok in argv if not tok.startswith("-")), None)
    args = parser(command).parse_args(argv)
    args.argv = argv            # `ternpe train --workers N` hands its own arguments on to torchrun
    from ternpe.contract import ContractError
    try:
        return COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        # one line, whatever the command; each module's INTERRUPTED says what it left behind
        note = getattr(COMMANDS[args.command], "INTERRUPTED", "")
        print(f"ternpe {args.command}: interrupted (Ctrl-C)" + (f"; {note}" if note else ""), file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as err:
        # ToolError, CosimError are RuntimeErrors; ContractError, DatasetError, ExportError are ValueErrors;
        # an OSError no check foresaw (a disk full, a file vanished) is said with its file
        msg = str(err)
        if isinstance(err, OSError) and err.filename is not None:
            msg = f"{err.filename}: {err.strerror or err} (check the path, its permissions and free space)"
        if not isinstance(err, ContractError) and "\n" not in msg:
            msg = "\n".join(textwrap.wrap(msg, 100, subsequent_indent="  ", break_on_hyphens=False,
                                          break_long_words=False))      # a path stays whole
        print(f"ternpe {args.command}: error: {msg}", file=sys.stderr)
        return 1
