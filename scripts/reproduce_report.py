"""Reproduces the report's tables and figures on real MNIST: `--out docs/results`.

Resumable: every finished run is cached under <out>/cache/ (see jaxdl.experiments); rerunning
the same command trains only what is missing, then rewrites the figures and tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from jaxdl import experiments, results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="reproduce_report.py", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("docs/results"), help="(default: %(default)s)")
    p.add_argument(
        "--quick", action="store_true", help="2 runs, a few epochs, nb=100: a smoke test"
    )
    p.add_argument(
        "--sections",
        nargs="+",
        choices=experiments.SECTIONS,
        default=list(experiments.SECTIONS),
        help="which sections (default: all, in the order %(default)s)",
    )
    p.add_argument(
        "--runs", type=int, default=None, help="runs of the beat-it and 3.3 cells (default: 10)"
    )
    p.add_argument(
        "--curve-runs",
        type=int,
        default=None,
        help="runs of the 2.2.1/2.3.1/2.4.1 and ablation cells (default: 10)",
    )
    p.add_argument(
        "--section-runs",
        nargs="+",
        default=[],
        metavar="SECTION=RUNS",
        help="curve runs of single sections, e.g. s231=10 (default: --curve-runs for all)",
    )
    p.add_argument(
        "--s221-epochs", type=int, default=None, help="epochs of the 2.2.1 curves (default: 100)"
    )
    p.add_argument(
        "--curve-epochs", type=int, default=None, help="epochs of 2.3.1/2.4.1 (default: 50)"
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        help="train each Project I cell's missing runs together (jaxdl.sweep: one run per "
        "core on a CPU, all batched on an accelerator): the same runs up to float rounding",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sweep:
        from jaxdl.sweep import one_device_per_core

        one_device_per_core()  # before JAX starts (effective only then)
    scale = experiments.Scale.quick() if args.quick else experiments.Scale()
    overrides = {
        "runs": args.runs,
        "curve_runs": args.curve_runs,
        "s221_epochs": args.s221_epochs,
        "curve_epochs": args.curve_epochs,
    }
    scale = dataclasses.replace(scale, **{k: v for k, v in overrides.items() if v is not None})
    if args.section_runs:
        pairs = tuple((s, int(n)) for s, _, n in (x.partition("=") for x in args.section_runs))
        scale = dataclasses.replace(scale, section_runs=pairs)
    plan = experiments.make_plan(scale, args.sections)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    start = time.perf_counter()
    total = experiments.pending_epochs(plan, out)
    print(f"{len(plan.cells)} cells, {total} epochs to train", file=sys.stderr)
    with tqdm(total=total, unit="epoch", dynamic_ncols=True) as bar:
        runs = experiments.run_plan(plan, out, bar.update, together=args.sweep)
    seconds = time.perf_counter() - start

    command = "python scripts/reproduce_report.py " + shlex.join(
        sys.argv[1:] if argv is None else list(argv)
    )
    tables = experiments.write_outputs(plan, runs, out)
    manifest_path = out / "manifest.json"
    manifest = {
        "command": command,
        "scale": dataclasses.asdict(scale),
        "sections": list(args.sections),
        "last_invocation_seconds": seconds,
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    results.write_json(manifest_path, manifest)
    print(tables)
    print(f"done in {seconds:.0f} s; wrote {out}/tables.md, summary.json, *.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from jaxdl import compile_cache

    compile_cache.enable()  # compile once per machine, not per process (JAXDL_COMPILE_CACHE=off)
    sys.exit(main())
