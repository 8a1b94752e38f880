"""Project II in torch: the disk task with the graded no-autograd framework, run after run."""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Sequence

import torch
from tqdm import tqdm

from jaxdl.framework import report
from jaxdl.framework.cli import default_out_dir, parse_config
from torch_reference.framework_train import History, train_run


def main(argv: Sequence[str] | None = None) -> int:
    config, out = parse_config(
        argv, "framework_torch.py", "Project II (no-autograd framework) in torch: the disk task."
    )
    out = out or default_out_dir("torch")
    # The course's rule: autograd off. This process only runs the framework, so globally here.
    torch.set_grad_enabled(False)
    runs = []
    bar = tqdm(total=config.runs * config.epochs, desc="runs x epochs", unit="epoch")
    for r in range(config.runs):
        seed = config.run_seed(r)

        def on_epoch(epoch: int, history: History, r: int = r) -> None:
            bar.update(1)
            bar.set_postfix(
                run=r + 1,
                loss=f"{history.train_loss[-1]:.4f}",
                test_err=f"{100 * history.test_error[-1]:.2f}%",
            )

        start = time.perf_counter()
        _, history = train_run(
            seed,
            output=config.output,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            schedule=config.schedule,
            momentum=config.momentum,
            inputs=config.inputs,
            on_epoch=on_epoch,
        )
        runs.append(report.run_record(seed, history, time.perf_counter() - start))
    bar.close()

    env = report.environment(
        "torch",
        f"cpu ({platform.processor() or platform.machine()})",
        {"torch": torch.__version__},
    )
    full_config = {
        **config.to_dict(),
        "out": str(out),
        **env,
        "torch_threads": torch.get_num_threads(),
    }
    results = report.write_results(out, full_config, runs, "torch_reference.framework (torch)")
    print(report.epoch_table(runs))
    total = sum(r["seconds"] for r in runs)
    print(f"\n{config.runs} runs in {total:.2f} s\n")
    print(report.table(results["summary"]))
    for line in report.divergence_warnings(runs):
        print(f"framework_torch.py: warning: {line}", file=sys.stderr)
    print(f"\nwrote {out / 'results.json'} and {out / 'loss.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
