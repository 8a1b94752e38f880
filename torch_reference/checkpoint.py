"""Checkpoints of Project I training in torch: the mirror of jaxdl.checkpoint, with torch.save.

The bookkeeping (flags, runs so far, resuming, which steps to keep) is jaxdl.checkpoint's
`Checkpointer`; a step here is one file `<dir>/step-<n>.pt` holding the JSON-ready record and
the state (model, optimizer, scheduler, torch's global RNG, the batch-order generator).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from jaxdl.checkpoint import Checkpointer, CheckpointError

__all__ = ["CheckpointError", "TorchCheckpointer"]

_STEP = re.compile(r"step-(\d+)\.pt")


class TorchCheckpointer(Checkpointer):
    """Steps are files `step-<n>.pt`, each written to a temporary file, flushed to disk and
    renamed (`os.replace`), so a process killed at any moment leaves the previous steps whole
    and no partial step under a step name."""

    framework = "torch"
    script = "train_torch.py"

    def _steps(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(
            int(m.group(1)) for p in self.directory.iterdir() if (m := _STEP.fullmatch(p.name))
        )

    def _foreign_entries(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(
            p.name
            for p in self.directory.iterdir()
            if not _STEP.fullmatch(p.name) and not p.name.endswith(".pt.tmp")
        )

    def _latest_step(self) -> int | None:
        steps = self._steps()
        return steps[-1] if steps else None

    def step_path(self, step: int) -> Path:
        return self.directory / f"step-{step}.pt"

    def _load(self, step: int) -> dict[str, Any]:
        path = self.step_path(step)
        try:
            # weights_only: tensors and plain containers only, never arbitrary pickled code.
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure to read is the same refusal
            text = " ".join(str(e).split())[:200]
            raise CheckpointError(
                f"{path}: cannot read the checkpoint ({type(e).__name__}: {text})"
            ) from None
        if not isinstance(saved, dict) or not {"meta", "state"} <= saved.keys():
            raise CheckpointError(f"{path}: not a {self.script} checkpoint")
        return saved

    def _read_meta(self, step: int) -> Any:
        return self._load(step)["meta"]

    def _read_state(self, step: int, template: Any) -> Any:
        # Loaded into fresh objects by torch_reference.train, which discards them on failure.
        return self._load(step)["state"]

    def _write(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.step_path(step)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save({"meta": meta, "state": state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        keep = set(self._steps()[-self.keep :]) | set(self.preserved)
        for old in self._steps():
            if old not in keep:
                self.step_path(old).unlink(missing_ok=True)
