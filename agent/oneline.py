"""The agent's command lines say a usage error as one line."""

from __future__ import annotations

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error said as one ``error:`` line (exit 2) instead of the usage text and the error."""

    def error(self, message: str):  # noqa: D102 - argparse's own hook
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)
