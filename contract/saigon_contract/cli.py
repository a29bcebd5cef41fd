"""What every Saigon command line shares: a usage mistake is one line that names the flag."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but an error prints `prog: error: message` and a hint instead of the whole usage."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n(`{self.prog} --help` lists the options)\n")
        raise SystemExit(2)


def whole_number_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type`: a whole number of at least `minimum`, or the flag's error naming the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {minimum}")
        return value

    return parse
