"""The one command line of Project I, shared by scripts/train_flax.py and scripts/train_torch.py.

Both scripts call `main(framework)`; the flags, their validation, the table, results.json and
errors.png live here only, so that the two CLIs cannot drift apart. Exit codes: 0 done,
1 bad data or an unreadable checkpoint (a one-line message naming the file), 2 bad flags (a
one-line argparse message), including a checkpoint written with other flags.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from jaxdl import results
from jaxdl.checkpoint import CheckpointError, FlagMismatch
from jaxdl.config import (
    HEAD_INPUT_MODELS,
    HEAD_INPUTS,
    KERNEL_SIZES,
    MODEL_NAMES,
    OPTIMIZERS,
    SCHEDULES,
    WIDTH_MODELS,
    TrainConfig,
)
from jaxdl.mnist import SOURCES, DataError

__all__ = [
    "FRAMEWORKS",
    "build_parser",
    "configs_from_args",
    "main",
    "parse_args",
    "training_flags",
]

FRAMEWORKS = ("flax", "torch")
REPO = Path(__file__).resolve().parent.parent
DEFAULTS = TrainConfig()
# One intra-op thread: the ops of these small models (batches of 50 pairs) gain little from
# more, and on the shared 2-core dev machine torch's default (2) made a 25-epoch siamese_aux run
# 5x slower (79 s with 1 thread, 424 s with 2; docs/PROJECT1.md).
TORCH_DEFAULT_THREADS = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage block: the message names the flag and the bad value.
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value:g}")
    return value


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value:g}")
    return value


def _dropout_rate(text: str) -> float:
    value = _float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value:g}")
    return value


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The Project I flags (defaults from TrainConfig); the same parser for both frameworks."""
    d = DEFAULTS
    p = _Parser(
        prog=prog,
        description="Train the Project I digit-pair classifiers; several --model values are "
        "compared in one table and one figure.",
    )
    p.add_argument(
        "--model",
        nargs="+",
        choices=MODEL_NAMES,
        default=[d.model],
        metavar="NAME",
        help=f"one or more of {', '.join(MODEL_NAMES)} (default: {d.model})",
    )
    p.add_argument("--epochs", type=_positive_int, default=d.epochs, help="(default: %(default)s)")
    p.add_argument(
        "--runs",
        type=_positive_int,
        default=d.runs,
        help="runs per model, run r seeded with seed + r (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    p.add_argument(
        "--batch-size", type=_positive_int, default=d.batch_size, help="(default: %(default)s)"
    )
    p.add_argument("--lr", type=_positive_float, default=d.lr, help="(default: %(default)s)")
    p.add_argument(
        "--weight-decay",
        type=_non_negative_float,
        default=d.weight_decay,
        help="(default: %(default)s)",
    )
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=d.optimizer,
        help="adam: coupled L2 (torch Adam); adamw: decoupled (default: %(default)s)",
    )
    p.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=d.schedule,
        help="per-epoch learning rate (default: %(default)s)",
    )
    p.add_argument(
        "--aux-weight",
        type=_non_negative_float,
        default=d.aux_weight,
        help="weight of the digit cross-entropy, *_aux models (default: %(default)s)",
    )
    p.add_argument(
        "--dropout",
        type=_dropout_rate,
        default=d.dropout,
        help="drop probability (default: %(default)s)",
    )
    p.add_argument(
        "--no-batchnorm",
        dest="batchnorm",
        action="store_false",
        help="leave out every BatchNorm layer (the report's batchnorm ablation)",
    )
    p.add_argument(
        "--depth",
        type=_positive_int,
        default=d.depth,
        help="conv layers per block of the branch, siamese_exact only (default: %(default)s)",
    )
    p.add_argument(
        "--width",
        type=_positive_int,
        default=d.width,
        help="conv channels (WIDTH, 2*WIDTH), every model but mlp (default: %(default)s)",
    )
    p.add_argument(
        "--kernel-size",
        type=int,
        choices=KERNEL_SIZES,
        default=d.kernel_size,
        help="conv kernels KxK (padding K//2), every model but mlp (default: %(default)s)",
    )
    p.add_argument(
        "--hidden",
        type=_non_negative_int,
        default=d.hidden,
        help="units of the Dense layer after the convolutions, every model but mlp; 0: none, "
        "the flattened conv map goes to the classifier (default: %(default)s)",
    )
    p.add_argument(
        "--mlp-hidden",
        type=_positive_int,
        nargs="+",
        default=list(d.mlp_hidden),
        metavar="N",
        help="the hidden layer sizes of mlp, e.g. --mlp-hidden 1024 512 (default: 128 64)",
    )
    p.add_argument(
        "--head-input",
        choices=HEAD_INPUTS,
        default=d.head_input,
        help="what the head of siamese/siamese_aux sees of each digit's 10 branch outputs: "
        "softmax, logits, or bnrelu (BatchNorm + ReLU) (default: %(default)s)",
    )
    p.add_argument(
        "--shift",
        type=int,
        choices=range(0, 4),
        default=d.shift,
        metavar="PIXELS",
        help="augmentation: shift each training digit by up to PIXELS (0-3) every step "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="augmentation: re-pair the training digits every epoch, targets from the classes",
    )
    p.add_argument(
        "--fresh-bn",
        action="store_true",
        help="before each epoch's evaluation, recompute the BatchNorm statistics on the "
        "epoch's training pairs (precise BN) instead of reading the running averages",
    )
    p.add_argument(
        "--nb",
        type=_positive_int,
        default=d.nb,
        help="pairs in each of the training and test sets (default: %(default)s)",
    )
    p.add_argument(
        "--source",
        choices=SOURCES,
        default=d.source,
        help="MNIST digits: idx, tfds, bundled, or auto (default: %(default)s)",
    )
    p.add_argument("--data-dir", default=d.data_dir, help="folder of the MNIST IDX files")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: runs/<time>-<framework>-<model>); one that already "
        "holds results.json is refused unless --overwrite",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    p.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="save the full training state there after every epoch (the last few kept)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the checkpoint in --checkpoint-dir (same flags required); starts "
        "afresh when it holds none",
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        help="flax only: train the runs together (jaxdl.sweep), each epoch's steps in one "
        "lax.scan: on a CPU one run per core at a time, on an accelerator every run batched "
        "with vmap. The same runs up to float rounding; not with --checkpoint-dir or --repair",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads (torch: torch.set_num_threads, default "
        f"{TORCH_DEFAULT_THREADS}; flax: XLA intra-op threads when set before JAX starts, "
        "default XLA's own choice)",
    )
    return p


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """Parses and validates the flags; exits with status 2 and one line on a bad one."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.batch_size > args.nb:
        parser.error(f"argument --batch-size: {args.batch_size} is larger than --nb {args.nb}")
    if len(set(args.model)) != len(args.model):
        parser.error("argument --model: a model is named twice")
    if args.depth != 1 and set(args.model) != {"siamese_exact"}:
        parser.error("argument --depth: only siamese_exact has a configurable depth")
    if args.width != DEFAULTS.width and not set(args.model) <= set(WIDTH_MODELS):
        parser.error("argument --width: mlp has no convolutions; leave it out of --model")
    if args.kernel_size != DEFAULTS.kernel_size and not set(args.model) <= set(WIDTH_MODELS):
        parser.error("argument --kernel-size: mlp has no convolutions; leave it out of --model")
    if args.hidden != DEFAULTS.hidden and not set(args.model) <= set(WIDTH_MODELS):
        parser.error("argument --hidden: mlp has no convolutions; leave it out of --model")
    if tuple(args.mlp_hidden) != DEFAULTS.mlp_hidden and set(args.model) != {"mlp"}:
        parser.error("argument --mlp-hidden: only mlp has these layers; use it with --model mlp")
    if args.head_input != DEFAULTS.head_input and not set(args.model) <= set(HEAD_INPUT_MODELS):
        parser.error("argument --head-input: only siamese and siamese_aux have a learned head")
    if args.sweep and args.checkpoint_dir is not None:
        parser.error("argument --sweep: runs trained together keep no checkpoints; drop one")
    if args.sweep and args.repair:
        parser.error("argument --sweep: --repair re-pairs run by run; use it without --sweep")
    if args.fresh_bn and not args.batchnorm:
        parser.error("argument --fresh-bn: --no-batchnorm leaves no BatchNorm statistics")
    if args.sweep and args.fresh_bn:
        parser.error("argument --sweep: --fresh-bn runs run by run; use it without --sweep")
    if args.resume and args.checkpoint_dir is None:
        parser.error("argument --resume: needs --checkpoint-dir")
    if args.out is not None and (args.out / "results.json").exists() and not args.overwrite:
        parser.error(
            f"argument --out: {args.out} already holds results.json; pass --overwrite to "
            "replace it, or choose another --out"
        )
    for flag, path in (("--out", args.out), ("--checkpoint-dir", args.checkpoint_dir)):
        if path is not None and path.exists() and not path.is_dir():
            parser.error(f"argument {flag}: {path} is a file, not a folder")
    return args


# Flags that do not change what is trained: a checkpoint resumes under any value of these.
_NOT_TRAINING = ("out", "overwrite", "threads", "checkpoint_dir", "resume", "sweep")


def training_flags(framework: str, args: argparse.Namespace) -> dict[str, Any]:
    """The flags a checkpoint must be resumed with: every flag that shapes the training."""
    flags = {k: v for k, v in vars(args).items() if k not in _NOT_TRAINING}
    return {"framework": framework, **_json_ready(flags)}


def _json_ready(flags: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in flags.items()}


def _open_checkpoint(framework: str, args: argparse.Namespace) -> Any:
    flags = training_flags(framework, args)
    if framework == "flax":
        from jaxdl.checkpoint import OrbaxCheckpointer

        return OrbaxCheckpointer(args.checkpoint_dir, flags, resume=args.resume)
    from torch_reference.checkpoint import TorchCheckpointer

    return TorchCheckpointer(args.checkpoint_dir, flags, resume=args.resume)


def configs_from_args(args: argparse.Namespace) -> list[TrainConfig]:
    """One TrainConfig per --model value."""
    return [
        TrainConfig(
            model=model,
            epochs=args.epochs,
            runs=args.runs,
            seed=args.seed,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            optimizer=args.optimizer,
            schedule=args.schedule,
            aux_weight=args.aux_weight,
            dropout=args.dropout,
            batchnorm=args.batchnorm,
            depth=args.depth,
            width=args.width,
            kernel_size=args.kernel_size,
            hidden=args.hidden,
            mlp_hidden=tuple(args.mlp_hidden),
            head_input=args.head_input,
            shift=args.shift,
            repair=args.repair,
            fresh_bn=args.fresh_bn,
            nb=args.nb,
            source=args.source,
            data_dir=args.data_dir,
        )
        for model in args.model
    ]


def _default_out(framework: str, models: Sequence[str]) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return REPO / "runs" / f"{stamp}-{framework}-{'+'.join(models)}"


def _backend(framework: str, threads: int | None, sweep: bool = False) -> Any:
    """The framework's train module, with the thread count applied before it starts (and,
    for --sweep, one XLA CPU device per core)."""
    if framework == "flax":
        # XLA_FLAGS is read when the XLA CPU client starts, i.e. only if JAX has not run yet.
        before = flags = os.environ.get("XLA_FLAGS", "")
        if threads is not None:
            flags += (
                f" --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                f"intra_op_parallelism_threads={threads}"
            )
        if flags != before:
            os.environ["XLA_FLAGS"] = flags.strip()
        if sweep:
            from jaxdl.sweep import one_device_per_core

            one_device_per_core()
        from jaxdl import train

        return train
    if framework == "torch":
        import torch

        torch.set_num_threads(threads if threads is not None else TORCH_DEFAULT_THREADS)
        # Same flags and seed, same bits (CPU kernels are deterministic already; this makes any
        # op without a deterministic kernel an error rather than a silent source of noise).
        torch.use_deterministic_algorithms(True)
        from torch_reference import train

        return train
    raise ValueError(f"unknown framework {framework!r}; choose from {', '.join(FRAMEWORKS)}")


def _train_together(config: TrainConfig, on_epoch: Any, on_diverged: Any) -> dict[str, Any]:
    # --sweep: the fastest sweep of docs/BENCHMARKS.md for the device.
    from jaxdl import sweep

    return sweep.train_sweep(
        config,
        sweep.runs_mesh(),
        **sweep.fastest_options(),
        on_epoch=on_epoch,
        on_diverged=on_diverged,
    )


def _versions(framework: str) -> dict[str, str]:
    import numpy

    out = {"python": platform.python_version(), "numpy": numpy.__version__}
    if framework == "flax":
        import flax
        import jax
        import optax

        out.update(jax=jax.__version__, flax=flax.__version__, optax=optax.__version__)
    else:
        import torch

        out["torch"] = torch.__version__
    return out


def _device(framework: str) -> str:
    if framework == "flax":
        import jax

        dev = jax.devices()[0]
        return f"jax {dev.platform}: {dev.device_kind} ({jax.device_count()} device(s))"
    import torch

    return f"torch cpu ({torch.get_num_threads()} threads), {platform.processor() or 'cpu'}"


def main(framework: str, argv: Sequence[str] | None = None) -> int:
    """Runs the CLI for `framework` ("flax" or "torch"); returns the exit status."""
    prog = f"train_{framework}.py"
    args = parse_args(argv, prog)
    if args.sweep and framework != "flax":
        print(f"{prog}: error: argument --sweep: only train_flax.py has it", file=sys.stderr)
        return 2
    configs = configs_from_args(args)
    out = args.out if args.out is not None else _default_out(framework, args.model)
    checkpoint: Any = None
    try:
        from jaxdl.mnist import load_digits

        data_description = load_digits(args.source, args.data_dir).describe()
        backend = _backend(framework, args.threads, args.sweep)
        from tqdm import tqdm

        counts = {c.model: backend.param_count(c) for c in configs}
        for model, n in counts.items():
            print(f"{model}: {n:,} parameters", file=sys.stderr)
        if args.checkpoint_dir is not None:
            checkpoint = _open_checkpoint(framework, args)
            if checkpoint.resumed:
                print(
                    f"resuming {checkpoint.directory} (step {checkpoint.step}, "
                    f"{checkpoint.epochs_done()} epoch(s) done)",
                    file=sys.stderr,
                )
        per_model: dict[str, dict[str, Any]] = {}
        total = sum(c.runs * c.epochs for c in configs)
        start = time.perf_counter()
        initial = checkpoint.epochs_done() if checkpoint is not None else 0
        with tqdm(total=total, initial=initial, unit="epoch", dynamic_ncols=True) as bar:

            def on_diverged(message: str) -> None:
                if checkpoint is not None:
                    message += f"; its last good state is {checkpoint.step_path(checkpoint.step)}"
                bar.write(f"{prog}: warning: {message}", file=sys.stderr)

            for config in configs:

                def on_epoch(run: int, epoch: int, row: dict[str, float], model=config.model):
                    bar.set_postfix_str(
                        f"{model} run {run + 1} test err {100 * row['test_error']:.1f}%"
                    )
                    bar.update(1)

                if args.sweep:
                    per_model[config.model] = _train_together(config, on_epoch, on_diverged)
                else:
                    per_model[config.model] = backend.train_and_evaluate(
                        config, on_epoch, checkpoint=checkpoint, on_diverged=on_diverged
                    )
                # Epochs a diverged run did not train still count towards the bar's total.
                bar.n = sum(
                    len(r["test_error"]) if not r["diverged"] else config.epochs
                    for res in per_model.values()
                    for r in res["runs"]
                )
                bar.refresh()
    except FlagMismatch as e:
        flag = "checkpoint-dir" if e.flag == "framework" else e.flag.replace("_", "-")
        print(f"{prog}: error: argument --{flag}: {e}", file=sys.stderr)
        return 2
    except CheckpointError as e:
        if e.usage:
            print(f"{prog}: error: argument --checkpoint-dir: {e}", file=sys.stderr)
            return 2
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except DataError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        # A checkpoint that cannot be written (no space, no permission): one line, not a trace.
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    finally:
        if checkpoint is not None:
            checkpoint.close()
    seconds = time.perf_counter() - start

    summaries = {m: r["summary"] for m, r in per_model.items()}
    table = results.format_table([(c.model, c.epochs, summaries[c.model]) for c in configs])
    print(table)
    config_record = {
        **_json_ready({k: v for k, v in vars(args).items() if k not in ("model", "out")}),
        "model": args.model[0] if len(args.model) == 1 else list(args.model),
        "models": list(args.model),
        "out": str(out),
        "framework": framework,
        "data": data_description,
        "device": _device(framework),
        "versions": _versions(framework),
        "platform": platform.platform(),
        "param_counts": counts,
        "command": [prog, *(sys.argv[1:] if argv is None else argv)],
        "seconds": seconds,
    }
    record = {
        "config": config_record,
        "runs": [r for res in per_model.values() for r in res["runs"]],
        "summary": summaries[args.model[0]] if len(args.model) == 1 else summaries,
        "summaries": summaries,
    }
    out.mkdir(parents=True, exist_ok=True)
    results.write_json(out / "results.json", record)
    title = f"{framework}: {args.epochs} epochs, {args.runs} run(s), nb={args.nb}"
    results.plot_errors(out / "errors.png", {m: r["runs"] for m, r in per_model.items()}, title)
    print(f"wrote {out / 'results.json'} and {out / 'errors.png'}", file=sys.stderr)
    return 0
