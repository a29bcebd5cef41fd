"""What every Saigon command line shares: a usage mistake is one line that names the flag."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but an error prints `prog: error: message` and a hint instead of the whole usage."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n(`{self.prog} --help` lists the options)\n")
        raise SystemExit(2)
