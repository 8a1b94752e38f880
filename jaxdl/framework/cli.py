"""The one command line of scripts/framework_torch.py and scripts/framework_flax.py."""

from __future__ import annotations

import argparse
import datetime as dt
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from jaxdl.framework.config import INPUTS, N_POINTS, OUTPUTS, SCHEDULES, FrameworkConfig

__all__ = ["build_parser", "default_out_dir", "parse_config"]


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag gives one line on stderr (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _checked(kind: type, ok: Callable[[float], bool], what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _checked(int, lambda v: v > 0, "a positive integer")
seed_int = _checked(int, lambda v: 0 <= v < 2**31 - 1000, "an integer in [0, 2^31 - 1000)")
batch_int = _checked(int, lambda v: 1 <= v <= N_POINTS, f"an integer in [1, {N_POINTS}]")
positive_float = _checked(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
momentum_float = _checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags both scripts share; defaults from FrameworkConfig."""
    d = FrameworkConfig()
    p = _OneLineParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--output",
        type=int,
        choices=OUTPUTS,
        default=d.output,
        help="1: one Tanh unit, targets -1/+1 (the report); 2: two units, one-hot (the course)",
    )
    p.add_argument("--epochs", type=positive_int, default=d.epochs)
    p.add_argument("--runs", type=positive_int, default=d.runs, help="run r uses seed + r")
    p.add_argument("--batch-size", type=batch_int, default=d.batch_size)
    p.add_argument("--lr", type=positive_float, default=d.lr, help="(initial) learning rate")
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help="learning rate")
    p.add_argument("--momentum", type=momentum_float, default=d.momentum)
    p.add_argument(
        "--inputs", choices=INPUTS, default=d.inputs, help="scaled by the training set, or [0,1]"
    )
    p.add_argument("--seed", type=seed_int, default=d.seed)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: runs/<timestamp>-framework-*; one that already holds results.json is "
        "refused unless --overwrite",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the results in --out")
    return p


def parse_config(
    argv: Sequence[str] | None, prog: str, description: str
) -> tuple[FrameworkConfig, Path | None]:
    """The FrameworkConfig and the --out directory (None: use default_out_dir).

    Exits with status 2 and one line on a bad flag, or when --out already holds results.json
    and --overwrite is not given.
    """
    parser = build_parser(prog, description)
    args = parser.parse_args(argv)
    out, overwrite = args.out, args.overwrite
    del args.out, args.overwrite
    if out is not None and (out / "results.json").exists() and not overwrite:
        parser.error(
            f"argument --out: {out} already holds results.json; pass --overwrite to replace "
            "it, or choose another --out"
        )
    return FrameworkConfig(**vars(args)), out


def default_out_dir(framework: str, now: dt.datetime | None = None) -> Path:
    """runs/<YYYYmmdd-HHMMSS>-framework-<framework> (runs/ is git-ignored)."""
    now = now or dt.datetime.now()
    return Path("runs") / f"{now:%Y%m%d-%H%M%S}-framework-{framework}"
