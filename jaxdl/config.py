"""The Project I training configuration shared by both train modules and CLIs (no JAX import)."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = [
    "HEAD_INPUTS",
    "HEAD_INPUT_MODELS",
    "MODEL_NAMES",
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainConfig",
    "WIDTH_MODELS",
]

# The registries of jaxdl.models / torch_reference.models, jaxdl.schedules and the optimizers of
# both train modules; named here so that the CLI can validate flags without importing a framework
# (tests check that they agree with the registries).
MODEL_NAMES = ("mlp", "cnn", "siamese", "cnn_aux", "siamese_aux", "siamese_exact")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "sgdr")
# What the learned head of siamese / siamese_aux sees of each digit's 10 branch outputs: their
# softmax (the default), the raw logits, or BatchNorm + ReLU of them (docs/RESULTS.md).
HEAD_INPUTS = ("softmax", "logits", "bnrelu")
# The models whose conv features take `width` (conv channels width, 2 * width), `kernel_size`
# and `hidden` (the Dense layer after the convolutions; 0: none).
WIDTH_MODELS = ("cnn", "siamese", "cnn_aux", "siamese_aux", "siamese_exact")
# Conv kernel sizes the CLI offers (odd, so that padding k // 2 keeps 14x14 -> 14x14).
KERNEL_SIZES = (3, 5, 7)
# The models with a learned head on the two digits' branch outputs (they take `head_input`).
HEAD_INPUT_MODELS = ("siamese", "siamese_aux")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One model's training recipe; `runs` repetitions, run r seeded with `seed + r`.

    Defaults are the report's choices where it states them (Adam lr 1e-3, weight decay 0.01,
    SGDR, aux weight 0.8, dropout 0.4, 25 epochs, 10 runs, 1000 pairs) and docs/PROJECT1.md's
    where it does not (batch size). The default model is the best measured one, `siamese_exact`
    (1.91 ± 0.30 % test error over 10 runs vs siamese_aux's ~3 %, docs/RESULTS.md).
    """

    model: str = "siamese_exact"
    epochs: int = 25
    runs: int = 10
    seed: int = 0
    batch_size: int = 50
    lr: float = 1e-3
    weight_decay: float = 0.01
    optimizer: str = "adam"
    schedule: str = "sgdr"
    aux_weight: float = 0.8
    dropout: float = 0.4
    batchnorm: bool = True  # False: the report's "batchnorm disabled" ablation (no BN layers)
    depth: int = 1  # conv layers per block of siamese_exact's branch (deeper branches)
    width: int = 32  # conv channels (width, 2 * width) of every model but mlp
    kernel_size: int = 3  # conv kernels k x k (odd; padding k // 2) of every model but mlp
    hidden: int = 100  # the Dense(-BN-ReLU) layer after the convs of every model but mlp; 0: none
    mlp_hidden: tuple[int, ...] = (128, 64)  # the mlp's hidden layer sizes (its `hidden`)
    head_input: str = "softmax"  # siamese / siamese_aux head input, one of HEAD_INPUTS
    # Training-set augmentation (jaxdl only; off by default, see docs/RESULTS.md): every
    # training digit shifted by up to `shift` pixels each step; the training digits re-paired
    # every epoch (targets from the classes).
    shift: int = 0
    repair: bool = False
    # After each epoch's training, the BatchNorm running statistics are replaced by those of
    # the epoch's training pairs under the new weights (one train-mode pass, no update), so
    # evaluation does not read averages that lag behind the weights ("precise BN"; see
    # docs/RESULTS.md, SGDR's epoch-6 spike).
    fresh_bn: bool = False
    nb: int = 1000
    source: str = "auto"
    data_dir: str | None = None

    def run_seed(self, run: int) -> int:
        """The seed of run `run` (0-based): it picks the pairs, the initialisation, the order."""
        return self.seed + run

    @property
    def steps_per_epoch(self) -> int:
        # The last incomplete batch is dropped (one compiled batch shape); the order is
        # reshuffled every epoch, so every pair is still seen.
        return self.nb // self.batch_size

    def model_hparams(self) -> dict[str, Any]:
        """The architecture options for `create_model`, each only where it is not its default
        (the models that do not have an option do not take it)."""
        defaults = TrainConfig()
        options = {
            k: getattr(self, k)
            for k in ("depth", "width", "kernel_size", "hidden", "head_input")
            if getattr(self, k) != getattr(defaults, k)
        }
        if tuple(self.mlp_hidden) != defaults.mlp_hidden:  # the MLP constructor's `hidden`
            options["hidden"] = tuple(self.mlp_hidden)
        return options

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
