"""The training job spec: one pydantic model, validated before anything runs or is queued.

It lives in the core (no torch): the service validates ``POST /jobs`` bodies with it and shows
its fields in the OpenAPI schema; the trainer builds the networks from it
(``trainer.loop.architecture``). Its defaults are the reference recipe (see README, "The
reference recipe"): a conditional DCGAN with a spectrally normalised projection discriminator,
hinge loss and an EMA generator.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ganforge.errors import InvalidInput

NUM_CLASSES = 10  # MNIST
# The names a spec may use, spelled out here so that validating a spec (the service does, for
# POST /jobs) needs no torch; tests/ganforge/test_spec.py keeps them equal to models.FAMILIES
# and models.LOSSES.
Family = Literal["mlp", "dcgan"]
Loss = Literal["bce", "minimax", "hinge", "wgan-gp"]


RESUMABLE = frozenset({"steps", "device"})  # what a resumed run may change


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- what to train ---
    family: Family = Field("dcgan", description="GAN family: mlp or dcgan")
    conditional: bool = Field(True, description="label-driven G and D")
    loss: Loss = Field("hinge", description="GAN loss")
    latent_dim: int = Field(100, ge=1, le=1024, description="length of z")
    width: int = Field(64, ge=8, le=512, description="base channels (dcgan) / units (mlp)")
    embed_dim: int = Field(50, ge=1, le=1024, description="length of G's label embedding")
    spectral_norm: bool = Field(True, description="spectral norm on every D layer")
    d_conditioning: Literal["projection", "concat"] = Field(
        "projection", description="how a conditional D sees the label")
    real_label: float = Field(1.0, gt=0.0, le=1.0,
                              description="target for real images in BCE (0.9: one-sided smoothing)")
    gp_weight: float = Field(10.0, ge=0.0, le=1000.0, description="WGAN-GP penalty weight")
    # --- how ---
    batch_size: int = Field(64, ge=2, le=4096, description="images per D and G step")
    lr_g: float = Field(4e-4, gt=0.0, le=1.0, description="Adam learning rate of G")
    lr_d: float = Field(4e-4, gt=0.0, le=1.0, description="Adam learning rate of D")
    beta1: float = Field(0.0, ge=0.0, lt=1.0, description="Adam beta1")
    beta2: float = Field(0.9, ge=0.0, lt=1.0, description="Adam beta2")
    d_steps: int = Field(0, ge=0, le=100,
                         description="D (critic) steps per G step; 0 = 5 for wgan-gp, else 1")
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0, description="EMA decay of G (0: no EMA)")
    steps: int = Field(3000, ge=1, le=10_000_000, description="G steps")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of weights, noise and data order")
    subset: int = Field(0, ge=0, le=60_000, description="train on the first N images (0: all)")
    # --- bookkeeping ---
    sample_every: int = Field(500, ge=1, description="steps between sample grids")
    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when present")

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.subset and self.subset < self.batch_size:
            raise ValueError(f"subset ({self.subset}) must be 0 or at least batch_size "
                             f"({self.batch_size})")
        return self

    @property
    def critic_steps(self) -> int:
        return self.d_steps or (5 if self.loss == "wgan-gp" else 1)

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES if self.conditional else 0

    @property
    def model_name(self) -> str:
        """The model store name: ``mnist-<family>[-cond]``."""
        return f"mnist-{self.family}{'-cond' if self.conditional else ''}"

    def check_resumes(self, saved: "TrainConfig", where: str) -> None:
        """The resume rule: a run continues only under its own config; ``steps`` and
        ``device`` (``RESUMABLE``) are all that may change."""
        if saved.model_dump(exclude=set(RESUMABLE)) != self.model_dump(exclude=set(RESUMABLE)):
            raise InvalidInput("run_dir", f"{where} holds a checkpoint of another config; "
                                          "resume it with --resume or pick another run dir")

    @classmethod
    def resumed(cls, saved: dict[str, Any], changes: dict[str, Any]) -> "TrainConfig":
        """The config of a resumed run: the checkpoint's own, with only ``RESUMABLE`` fields
        changed (the CLI's ``--resume RUN_DIR --steps N``)."""
        others = sorted(set(changes) - RESUMABLE)
        if others:
            flags = ", ".join("--" + k.replace("_", "-") for k in others)
            raise InvalidInput("resume", "the config comes from the checkpoint; only --steps and "
                                         f"--device may change (got {flags})")
        return cls.model_validate({**saved, **changes})

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
