"""Entry point of the ``dgm`` command.

Every user error ends with one line ``dgm: error: ...`` on stderr and exit code 1 (2 for
command-line usage errors), without a traceback; files are written atomically, so a failed
command leaves no half-written file behind.
"""

import argparse
import logging
import os
import sys

from dgmkit import __version__
from dgmkit._io import describe_os_error
from dgmkit.errors import DgmError

__all__ = ["main", "build_parser"]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``dgm`` parser; ``argv`` (when given) picks the family whose flags ``dgm train`` offers."""
    from dgmkit.cli import cluster, compress, demo, density, evaluate, figures, train

    parser = argparse.ArgumentParser(prog="dgm", description="dgmkit: likelihood-based deep generative models")
    parser.add_argument("--version", action="version", version=f"dgmkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug information")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    train.add_parser(sub, train.family_from_argv(list(argv or [])))
    evaluate.add_parser(sub)
    figures.add_parsers(sub)
    cluster.add_parser(sub)
    density.add_parser(sub)
    compress.add_parsers(sub)
    demo.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (dgm ... | head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except DgmError as e:
        print(f"dgm: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"dgm: error: {describe_os_error(e, e.filename or 'a file')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dgm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
