"""Checkpoints of Project I training: the full state after every epoch, resumable bit for bit.

`Checkpointer` holds the framework-neutral part (the flags a checkpoint was written with, the
runs so far, where to resume, which steps to keep); `OrbaxCheckpointer` stores a jaxdl
TrainState with Orbax, `torch_reference.checkpoint.TorchCheckpointer` a torch state with
`torch.save`. Each save is one step holding the state of the run in progress and a JSON record
of every run so far, committed atomically, so the latest step alone is enough to resume.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT",
    "KEEP",
    "CheckpointError",
    "Checkpointer",
    "FlagMismatch",
    "OrbaxCheckpointer",
    "run_finished",
]

FORMAT = "jaxdl-project1-checkpoint/1"
KEEP = 3  # the last few steps; a diverged run's last good state is kept beyond these
# Flags added after checkpoints were first written, with their defaults: a checkpoint that does
# not record one was written with its default (the architecture then had no such option).
LATER_FLAGS: dict[str, Any] = {
    "width": 32,
    "kernel_size": 3,
    "hidden": 100,
    "mlp_hidden": [128, 64],
    "head_input": "softmax",
}


class CheckpointError(Exception):
    """A checkpoint folder that cannot be used as asked; the message is one line.

    `usage`: the flags are at fault (exit status 2), not a damaged file (status 1).
    """

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


class FlagMismatch(CheckpointError):
    """The checkpoint was written with other flags; `flag` names the first that differs."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message, usage=True)
        self.flag = flag


def _flag_text(name: str, value: Any) -> str:
    if name == "framework":
        return f"train_{value}.py"
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    return f"--{name.replace('_', '-')} {value}"


def check_flags(saved: Mapping[str, Any], given: Mapping[str, Any], directory: Path) -> None:
    """Raises FlagMismatch naming the first flag whose value differs from the checkpoint's."""
    for name in [*given, *(k for k in saved if k not in given)]:
        old, new = saved.get(name, LATER_FLAGS.get(name)), given.get(name, LATER_FLAGS.get(name))
        if old != new:
            was, now = _flag_text(name, old), _flag_text(name, new)
            raise FlagMismatch(
                name,
                f"the checkpoint in {directory} was written with {was}, not {now}; resume with "
                "the same flags or choose another --checkpoint-dir",
            )


def run_finished(record: Mapping[str, Any], epochs: int) -> bool:
    """A run is finished when it trained all its epochs or diverged."""
    return bool(record.get("diverged")) or len(record["test_error"]) >= epochs


class Checkpointer:
    """One checkpoint folder: opened fresh, or resumed from its latest step.

    Args:
      directory: the folder (created if missing).
      flags: every flag that shapes the training (model, data, optimizer, ...); a resumed
        checkpoint must have been written with the same values.
      resume: continue the latest step; without it a folder that already holds a checkpoint
        is refused, so that a typo cannot silently extend or clobber another experiment.
      keep: how many of the latest steps to keep.

    Raises:
      FlagMismatch: the checkpoint was written with other flags.
      CheckpointError: the folder holds a checkpoint and `resume` is false, holds files that
        are not checkpoints of this framework, or its latest step cannot be read.
    """

    framework = ""  # "flax" or "torch", set by subclasses
    script = ""

    def __init__(
        self,
        directory: str | os.PathLike,
        flags: Mapping[str, Any],
        *,
        resume: bool,
        keep: int = KEEP,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.flags = dict(flags)
        self.keep = keep
        self.runs: list[dict[str, Any]] = []  # every run so far, the last possibly partial
        self.step = 0  # the latest saved step; steps count saves from 1
        self.preserved: list[int] = []  # steps holding a diverged run's last good state
        self.resumed = False
        foreign = self._foreign_entries()
        if foreign:
            raise CheckpointError(
                f"{self.directory} holds files that are not {self.script} checkpoints "
                f"(e.g. {foreign[0]!r}); choose an empty or new --checkpoint-dir",
                usage=True,
            )
        latest = self._latest_step()
        if latest is None:
            return
        if not resume:
            raise CheckpointError(
                f"{self.directory} already holds a checkpoint (step {latest}); pass --resume "
                "to continue it, or choose another --checkpoint-dir",
                usage=True,
            )
        meta = self._read_meta(latest)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(
                f"{self.step_path(latest)}: not a {FORMAT} checkpoint "
                f"(format {meta.get('format') if isinstance(meta, dict) else None!r})"
            )
        check_flags(meta["flags"], self.flags, self.directory)
        self.runs = meta["runs"]
        # In place: the Orbax preservation policy holds this very list.
        self.preserved[:] = meta.get("preserved", [])
        self.step = latest
        self.resumed = True

    # --- what subclasses provide -------------------------------------------------------------

    def _foreign_entries(self) -> list[str]:
        raise NotImplementedError

    def _latest_step(self) -> int | None:
        raise NotImplementedError

    def step_path(self, step: int) -> Path:
        """Where step `step` is stored."""
        raise NotImplementedError

    def _read_meta(self, step: int) -> Any:
        raise NotImplementedError

    def _read_state(self, step: int, template: Any) -> Any:
        raise NotImplementedError

    def _write(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------

    def _index(self, model: str, run: int) -> int | None:
        matches = [i for i, r in enumerate(self.runs) if r["model"] == model and r["run"] == run]
        return matches[0] if matches else None

    def epochs_done(self) -> int:
        """Epochs trained so far over all runs (a diverged run counts as finished)."""
        epochs = self.flags["epochs"]
        return sum(epochs if r.get("diverged") else len(r["test_error"]) for r in self.runs)

    def resume_run(
        self, model: str, run: int, epochs: int, template: Any
    ) -> tuple[dict[str, Any], Any] | None:
        """What the checkpoint holds of run `run` of `model`.

        Returns None when nothing (train it from the start), (record, None) when the run is
        finished, (record, state) when it is in progress: `state` is the full training state
        after the record's last epoch, read into the structure of `template`.
        """
        i = self._index(model, run)
        if i is None:
            return None
        record = copy.deepcopy(self.runs[i])
        record.pop("run", None)
        if run_finished(self.runs[i], epochs):
            return record, None
        if i != len(self.runs) - 1:
            raise CheckpointError(
                f"{self.step_path(self.step)}: run {run + 1} of {model} is unfinished but is "
                "not the latest run; the checkpoint is inconsistent"
            )
        return record, self._read_state(self.step, template)

    def restore_state(self, step: int, template: Any) -> Any:
        """The training state saved at `step`, read into the structure of `template`."""
        return self._read_state(step, template)

    def save(
        self, model: str, run: int, state: Any, record: Mapping[str, Any], *, diverged: bool = False
    ) -> None:
        """Saves `state` (the run's state after the record's last epoch) and every run so far.

        `diverged`: the run stopped on a non-finite loss; `state` is its last good state, and
        this step is kept beyond the `keep` latest.
        """
        entry = {**copy.deepcopy(dict(record)), "run": run}
        i = self._index(model, run)
        if i is None:
            self.runs.append(entry)
        else:
            self.runs[i] = entry
        self.step += 1
        if diverged:
            self.preserved.append(self.step)
        meta = {
            "format": FORMAT,
            "flags": self.flags,
            "runs": self.runs,
            "preserved": self.preserved,
            "model": model,
            "run": run,
            "epoch": len(record["test_error"]),
        }
        self._write(self.step, state, meta)

    def close(self) -> None:
        """Releases the folder (every save is already committed when `save` returns)."""


# --- Orbax (jaxdl) -------------------------------------------------------------------------


@dataclasses.dataclass
class _KeepSteps:
    """An Orbax preservation policy: keep the steps in `steps` (diverged runs' last good)."""

    steps: Sequence[int]

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> Sequence[bool]:
        return [c.step in self.steps for c in checkpoints]


class OrbaxCheckpointer(Checkpointer):
    """Steps are Orbax step folders `<dir>/<step>/{state,meta}` of one CheckpointManager.

    State: `{"train_state": flax to_state_dict(TrainState), "shuffle_key": key}` through
    `StandardSave`; meta: the JSON record through `JsonSave`. Orbax writes a step into a
    temporary folder and renames it when complete, and saves are synchronous, so a process
    killed at any moment leaves the previous steps whole and no partial step visible.
    """

    framework = "flax"
    script = "train_flax.py"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._manager: Any = None
        super().__init__(*args, **kwargs)

    def _mgr(self) -> Any:
        # Imported here: opening a folder to check its flags must not cost a JAX start-up.
        import orbax.checkpoint as ocp
        from orbax.checkpoint import checkpoint_managers as policies

        if self._manager is None:
            self._manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(
                    # Synchronous: `save` returns once the step is committed (renamed).
                    enable_async_checkpointing=False,
                    preservation_policy=policies.AnyPreservationPolicy(
                        [policies.LatestN(n=self.keep), _KeepSteps(self.preserved)]
                    ),
                    create=True,
                    # A step a killed process left half-written (still under its temporary
                    # name) is removed when the folder is opened again.
                    cleanup_tmp_directories=True,
                ),
            )
        return self._manager

    def _foreign_entries(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(
            p.name
            for p in self.directory.iterdir()
            if not (p.is_dir() and p.name.split(".")[0].isdigit())
            and not p.name.startswith("_")  # Orbax's root metadata
        )

    def _latest_step(self) -> int | None:
        if not self.directory.is_dir():
            return None
        return self._mgr().latest_step()

    def step_path(self, step: int) -> Path:
        return self.directory / str(step)

    def _read_meta(self, step: int) -> Any:
        import orbax.checkpoint as ocp

        try:
            return self._mgr().restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
                "meta"
            ]
        except Exception as e:  # noqa: BLE001 - any failure to read is the same refusal
            raise CheckpointError(
                f"{self.step_path(step)}: cannot read the checkpoint record ({_one_line(e)})"
            ) from None

    def _read_state(self, step: int, template: Any) -> Any:
        import jax
        import jax.numpy as jnp
        import numpy as np
        import orbax.checkpoint as ocp
        from flax import serialization

        target = _state_tree(template)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), target)
        try:
            restored = self._mgr().restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )["state"]
        except Exception as e:  # noqa: BLE001 - any failure to read is the same refusal
            raise CheckpointError(
                f"{self.step_path(step)}: cannot read the training state ({_one_line(e)})"
            ) from None
        # Orbax may restore a subset or cast; accept only the very structure, shapes, dtypes.
        if jax.tree.structure(restored) != jax.tree.structure(abstract) or any(
            np.shape(a) != b.shape or a.dtype != b.dtype
            for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(abstract), strict=True)
        ):
            raise CheckpointError(
                f"{self.step_path(step)}: the saved state does not match this model's "
                "parameters and optimizer state"
            )
        # Uncommitted arrays, as a fresh state holds: Orbax returns arrays committed to a
        # device, whose sharding would make jit compile every step function a second time.
        restored = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), restored)
        train_state, shuffle_key = template
        train_state = serialization.from_state_dict(train_state, restored["train_state"])
        # The step as a fresh state holds it (a weakly typed integer): a strongly typed int32
        # array would make jit compile the train step a second time.
        return train_state.replace(step=int(train_state.step)), restored["shuffle_key"]

    def _write(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        import orbax.checkpoint as ocp

        mgr = self._mgr()
        mgr.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_state_tree(state)), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        mgr.wait_until_finished()

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None


def _state_tree(state: Any) -> dict[str, Any]:
    # (TrainState, shuffle key) as a tree of arrays only: Orbax stores no Python objects.
    import jax
    import jax.numpy as jnp
    from flax import serialization

    train_state, shuffle_key = state
    tree = {"train_state": serialization.to_state_dict(train_state), "shuffle_key": shuffle_key}
    return jax.tree.map(jnp.asarray, tree)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
