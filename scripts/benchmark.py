"""Benchmark jaxdl against torch_reference on this machine: prints a Markdown table, writes JSON.

    python scripts/benchmark.py                      # the full benchmark (docs/BENCHMARKS.md)
    python scripts/benchmark.py --quick              # under 2 minutes on a 2-core CPU
    python scripts/benchmark.py --models cnn mlp --epochs 5 --json out.json

On a GPU it measures there (JAX's default backend, torch on CUDA) without change. On a CPU
each core is made an XLA device (below), so sweeps are also timed sharded over the cores;
set XLA_FLAGS=--xla_force_host_platform_device_count=1 to measure one device.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# One XLA:CPU device per core (before JAX starts), so that a sweep's runs can be sharded over
# the cores: XLA:CPU otherwise shows every core as one device. Only the CPU platform is
# affected (a GPU machine's GPUs stay its devices); an XLA_FLAGS that already sets it wins.
# Only when run as a script: importing this module (the tests do) changes nothing.
if __name__ == "__main__" and "xla_force_host_platform_device_count" not in os.environ.get(
    "XLA_FLAGS", ""
):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={os.cpu_count() or 1}"
    ).strip()

from jaxdl import benchmark, results  # noqa: E402
from jaxdl.config import MODEL_NAMES  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="siamese_aux only, few epochs, 1 repeat")
    p.add_argument("--models", nargs="+", choices=MODEL_NAMES, help="Project I models")
    p.add_argument("--sweep-models", nargs="*", choices=MODEL_NAMES, help="models with a sweep")
    p.add_argument("--epochs", type=int, help="Project I epochs per run")
    p.add_argument("--nb", type=int, help="Project I pairs per set")
    p.add_argument("--framework-epochs", type=int, help="Project II epochs per run")
    p.add_argument("--repeats", type=int, help="timed repetitions (median)")
    p.add_argument("--sweep-runs", type=int, help="runs in a sweep")
    p.add_argument("--source", help="MNIST source (idx, tfds, bundled, auto)")
    p.add_argument(
        "--torch-threads",
        nargs="+",
        metavar="N",
        help="torch CPU thread settings to time: numbers and/or 'default' (default: 1 default)",
    )
    p.add_argument("--json", type=Path, help="write the full record here")
    args = p.parse_args(argv)
    bench = benchmark.BenchmarkConfig.quick() if args.quick else benchmark.BenchmarkConfig()
    changes = {
        field: getattr(args, field)
        for field in ("epochs", "nb", "framework_epochs", "repeats", "sweep_runs", "source")
        if getattr(args, field) is not None
    }
    if args.models is not None:
        changes["models"] = tuple(args.models)
    if args.sweep_models is not None:
        changes["sweep_models"] = tuple(args.sweep_models)
    if args.torch_threads is not None:
        try:
            changes["torch_threads"] = tuple(
                None if t == "default" else int(t) for t in args.torch_threads
            )
        except ValueError:
            p.error(
                f"argument --torch-threads: expected numbers or 'default', got {args.torch_threads}"
            )
    bench = dataclasses.replace(bench, **changes)
    record = benchmark.run_benchmark(bench, log=lambda m: print(f"... {m}", file=sys.stderr))
    record["command"] = ["scripts/benchmark.py", *(sys.argv[1:] if argv is None else argv)]
    print(benchmark.format_table(record))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        results.write_json(args.json, record)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
