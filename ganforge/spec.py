"""The training job spec: one pydantic model, validated before anything runs or is queued.

It lives in the core (no torch): the service validates ``POST /jobs`` bodies with it and shows
its fields in the OpenAPI schema; the trainer builds the networks from it
(``trainer.loop.architecture``). Its defaults are the reference recipe (see README, "The
reference recipe"): a conditional DCGAN with a spectrally normalised projection discriminator,
hinge loss and an EMA generator. A data set may change a few of them (its registry entry's
``recipe``, ``ganforge.datasets``): a spec's own values win over the set's, the set's over the
defaults.
"""

import re
from pathlib import PurePath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ganforge import datasets
from ganforge.errors import InvalidInput

# The names a spec may use, spelled out here so that validating a spec (the service does, for
# POST /jobs) needs no torch; tests/ganforge/test_spec.py keeps them equal to models.FAMILIES,
# models.LOSSES and models.supported_sizes.
Family = Literal["mlp", "dcgan"]
Loss = Literal["bce", "minimax", "hinge", "wgan-gp"]
FAMILY_SIZES: dict[str, tuple[int, ...]] = {"mlp": (28, 32), "dcgan": (28, 32, 64)}
Schedule = Literal["fixed", "threshold"]
MAX_SUBSET = 1_000_000  # above EMNIST letters' 124,800 training images
MAX_SLUG = 40  # of a folder's name in a model name (store names stop at 63 characters)


# R1's weight in the reference recipe (BENCHMARKS.md, "R1 in the defaults")
R1_DEFAULT = 0.5
# the auxiliary class loss's weight (BENCHMARKS.md, "The class loss in the defaults")
CLASS_LOSS_DEFAULT = 0.03
RESUMABLE = frozenset({"steps", "device"})  # what a resumed run may change
# Fields added after checkpoints were first written, with the behaviour the loop had before them:
# a stored config that lacks one trained that way, whatever today's default is
# (``TrainConfig.from_stored``).
ADDED_LATER: dict[str, Any] = {"lr_decay": "none", "r1_gamma": 0.0, "augment": "none",
                               "d_extra_convs": 0, "ema_bn_batches": 0, "d_label_spread": False,
                               "class_loss": 0.0, "d_joint": False}


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- what to train ---
    dataset: str = Field("mnist", min_length=1, max_length=500,
                         description="labelled image set: " + ", ".join(datasets.dataset_names()))
    family: Family = Field("dcgan", description="GAN family: mlp or dcgan")
    image_size: int = Field(28, description="image side: 28 or 32 (mlp, dcgan), 64 (dcgan)")
    channels: int = Field(1, description="1 (grey) or 3 (colour)")
    conditional: bool = Field(True, description="label-driven G and D")
    loss: Loss = Field("hinge", description="GAN loss")
    latent_dim: int = Field(100, ge=1, le=1024, description="length of z")
    width: int = Field(64, ge=8, le=512, description="base channels (dcgan) / units (mlp)")
    embed_dim: int = Field(50, ge=1, le=1024, description="length of G's label embedding")
    spectral_norm: bool = Field(True, description="spectral norm on every D layer")
    d_conditioning: Literal["projection", "concat"] = Field(
        "projection", description="how a conditional D sees the label")
    d_extra_convs: int = Field(1, ge=0, le=4, description="dcgan: 3x3 stride-1 convs on D's "
                                                          "last feature map (D's capacity)")
    d_label_spread: bool = Field(True, description="dcgan, conditional: D's first extra conv also "
                                                   "sees each image's label's feature spread over "
                                                   "the batch (minibatch std per label); off by "
                                                   "default where it cannot apply")
    real_label: float = Field(1.0, gt=0.0, le=1.0,
                              description="target for real images in BCE (0.9: one-sided smoothing)")
    gp_weight: float = Field(10.0, ge=0.0, le=1000.0, description="WGAN-GP penalty weight")
    # --- how ---
    batch_size: int = Field(128, ge=2, le=4096, description="images per D and G step")
    lr_g: float = Field(6e-4, gt=0.0, le=1.0, description="Adam learning rate of G")
    lr_d: float = Field(6e-4, gt=0.0, le=1.0, description="Adam learning rate of D")
    beta1: float = Field(0.0, ge=0.0, lt=1.0, description="Adam beta1")
    beta2: float = Field(0.9, ge=0.0, lt=1.0, description="Adam beta2")
    d_steps: int = Field(0, ge=0, le=100,
                         description="D (critic) steps per G step; 0 = 5 for wgan-gp, else 1")
    d_joint: bool = Field(True, description="the fixed schedule's D step gives D its real and "
                                            "fake batches in one call (one pass over its weights, "
                                            "one spectral-norm power step; the label spread still "
                                            "per batch); false: two calls")
    ema_decay: float = Field(0.995, ge=0.0, lt=1.0,
                             description="EMA decay of G (0: no EMA); a warm-up, (1 + step) / "
                                         "(10 + step), caps it early: 0.995 applies from step "
                                         "1790")
    ema_bn_batches: int = Field(
        50, ge=0, le=1000, description="at the last step, the EMA generator's BatchNorm statistics "
                                       "re-estimated for its own weights over this many batches "
                                       "of 256 (0: the live G's, copied each step)")
    lr_decay: Literal["none", "linear", "tail"] = Field(
        "tail", description="learning-rate schedule: linear takes both rates to 0 at the last "
                            "step; tail holds them, then takes them to 0 over the last lr_tail "
                            "of the steps")
    lr_tail: float = Field(0.25, gt=0.0, le=1.0,
                           description="tail: the share of the steps over which both rates go to "
                                       "0 (1: the same as linear)")
    r1_gamma: float = Field(R1_DEFAULT, ge=0.0, le=1000.0,
                            description="R1 penalty weight (gamma/2 * E|grad D(real)|^2; 0: off); "
                                        "left out, 0 with the wgan-gp loss (its own penalty) or a "
                                        "compile mode that cannot hold it (on; graph with "
                                        "r1_every 1)")
    r1_every: int = Field(16, ge=1, le=1000, description="D steps between R1 penalties (lazy, "
                                                         "scaled up to match)")
    mode_seeking: float = Field(0.0, ge=0.0, le=100.0,
                                description="weight of the mode-seeking term in G's loss (MSGAN: "
                                            "variety within a label; 0: off)")
    class_loss: float = Field(CLASS_LOSS_DEFAULT, ge=0.0, le=10.0,
                              description="weight of an auxiliary class loss (AC-GAN) on a "
                                          "projection D's class scores: D names real images' "
                                          "labels, G draws images D names as theirs; 0: off "
                                          "(the default where D has no class scores)")
    augment: Literal["none", "translation", "translation+cutout"] = Field(
        "none", description="DiffAugment policy on every image D sees, real and fake")
    schedule: Schedule = Field(
        "fixed", description="fixed: d_steps D steps per G step; threshold: each round trains D "
                             "until d_threshold, then G until g_threshold (accuracy on a held-out batch)")
    d_threshold: float = Field(0.5, ge=0.0, le=1.0,
                               description="threshold schedule: D trains until this accuracy")
    g_threshold: float = Field(0.2, ge=0.0, le=1.0,
                               description="threshold schedule: G trains until D calls this share "
                                           "of its fakes real")
    g_steps: int = Field(1, ge=1, le=100,
                         description="threshold schedule: G steps at least per round")
    steps: int = Field(3500, ge=1, le=10_000_000, description="G steps (threshold schedule: rounds)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of weights, noise and data order")
    subset: int = Field(0, ge=0, le=MAX_SUBSET, description="train on the first N images (0: all)")
    # --- how fast (trainer/fastpath.py): the same training up to float rounding; auto = the
    # fast path on CUDA, the plain loop (bit-exact resume, same figures) on the CPU ---
    log_every: int = Field(0, ge=0, le=100_000,
                           description="read losses to the host every N steps, one sync per N "
                                       "(0: auto, 1 on CPU, 50 on CUDA)")
    adam: Literal["auto", "torch", "foreach", "fused"] = Field(
        "auto", description="Adam kernels: torch (PyTorch's pick), foreach, fused (auto: fused on "
                            "CUDA, torch on CPU)")
    compile: Literal["auto", "on", "graph", "off"] = Field(
        "auto", description="on: torch.compile(mode=reduce-overhead), CUDA graphs on CUDA; graph: "
                            "the whole step captured by hand in one CUDA graph (static buffers "
                            "on the CPU; a lazy R1 penalty's steps run outside it); auto: graph "
                            "on CUDA unless the loss has a gradient penalty or R1 runs every D "
                            "step, off on the CPU")
    amp: Literal["auto", "bf16", "off"] = Field(
        "auto", description="bf16 autocast (auto: on a CPU with bf16 in hardware, AVX512_BF16 or "
                            "AMX; off on CUDA and other CPUs; a resumed run keeps its own)")
    channels_last: Literal["auto", "on", "off"] = Field(
        "auto", description="channels_last memory format (auto: on CUDA; on the CPU with bf16 "
                            "autocast only)")
    # --- bookkeeping ---
    sample_every: int = Field(500, ge=1, description="steps between sample grids")
    realness_grid: bool = Field(False, description="print D's realness score above each image "
                                                   "of the sample grids")
    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when present")

    @model_validator(mode="before")
    @classmethod
    def _filled(cls, data: Any) -> Any:
        """A set's own recipe (``datasets.recipe_for``) fills the fields a spec leaves out: what
        the spec gives wins, then the set's recipe, then the field's default. R1's default
        applies only where R1 can run: not beside the wgan-gp loss's own penalty, nor under a
        compile mode that cannot differentiate D twice (``refuse_compile``); the label spread's
        only where it can be built (``spread_applies``)."""
        if not isinstance(data, dict):
            return data
        if isinstance(data.get("dataset", "mnist"), str):
            data = {**datasets.recipe_for(data.get("dataset", "mnist")), **data}
        if "r1_gamma" not in data:
            loss = data.get("loss", "")
            every = filled_in(data, "r1_every")["r1_every"]
            runs = loss != "wgan-gp"
            try:  # the compile modes' own rule, asked of the default
                refuse_compile(data.get("compile", "auto"), "R1",
                               lazy_r1=lazy_r1(loss, R1_DEFAULT, every))
            except ValueError:
                runs = False
            if not runs:
                data = {**data, "r1_gamma": 0.0}
        if "d_label_spread" not in data and not spread_applies(data):
            data = {**data, "d_label_spread": False}
        if "class_loss" not in data and not class_loss_applies(data):
            data = {**data, "class_loss": 0.0}
        return data

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        _reraise(datasets.idx_set, name)
        return name

    @field_validator("image_size")
    @classmethod
    def _buildable_size(cls, size: int, info: ValidationInfo) -> int:
        family = info.data.get("family")  # absent when the family itself was refused
        sizes = FAMILY_SIZES.get(family, ()) if family else tuple(sorted(set().union(*FAMILY_SIZES.values())))
        if size not in sizes:
            who = f"the {family} family builds" if family else "the families build"
            raise ValueError(f"must be one of {', '.join(map(str, sizes))} ({who} those)")
        return size

    @field_validator("channels")
    @classmethod
    def _grey_or_colour(cls, channels: int) -> int:
        if channels not in datasets.CHANNELS:
            raise ValueError("must be 1 (grey) or 3 (colour)")
        return channels

    @field_validator("d_label_spread")
    @classmethod
    def _spread_needs(cls, spread: bool, info: ValidationInfo) -> bool:
        if spread and not spread_applies(info.data):
            raise ValueError("needs the dcgan family, conditional, and d_extra_convs >= 1 (the "
                             "spread plane goes in before the first extra conv)")
        return spread

    @field_validator("schedule")
    @classmethod
    def _schedule_steps(cls, schedule: str, info: ValidationInfo) -> str:
        if schedule == "threshold" and info.data.get("d_steps"):
            raise ValueError("the threshold schedule decides how long D trains: leave d_steps at 0")
        return schedule

    @field_validator("g_steps")
    @classmethod
    def _threshold_only(cls, g_steps: int, info: ValidationInfo) -> int:
        if g_steps != 1 and info.data.get("schedule") == "fixed":
            raise ValueError("only the threshold schedule uses it (--schedule threshold)")
        return g_steps

    @field_validator("compile")
    @classmethod
    def _compilable(cls, compile: str, info: ValidationInfo) -> str:
        """A double backward through D (the wgan-gp loss, the R1 penalty) is not compilable or
        capturable; ``auto`` then stays plain (``trainer.fastpath.resolve``). ``graph`` takes a
        lazy R1 penalty: its steps run outside the graph."""
        loss, r1_gamma = info.data.get("loss", ""), info.data.get("r1_gamma", 0.0)
        why = double_backward(loss, r1_gamma)
        if why:
            refuse_compile(compile, why, lazy_r1=lazy_r1(loss, r1_gamma, info.data.get("r1_every", 1)))
        return compile

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.subset and self.subset < self.batch_size:
            raise ValueError(f"subset ({self.subset}) must be 0 or at least batch_size "
                             f"({self.batch_size})")
        if self.class_loss and not class_loss_applies(self.to_dict()):
            raise ValueError("class_loss needs a conditional model with projection conditioning "
                             "(the class scores are the projection's) and the fixed schedule")
        return self

    @property
    def critic_steps(self) -> int:
        return self.d_steps or (5 if self.loss == "wgan-gp" else 1)

    @property
    def model_name(self) -> str:
        """The model store name: ``<dataset>-<family>[-cond]`` (``mnist-dcgan-cond``); an image
        folder is ``folder-<its base name>``. The number of classes is the data's, not the spec's:
        an image folder's classes are known only once it is read (``datasets.dataset_info``)."""
        return f"{dataset_slug(self.dataset)}-{self.family}{'-cond' if self.conditional else ''}"

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
        return cls.from_stored({**saved, **changes})

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> "TrainConfig":
        """A config as a checkpoint stored it (``to_dict``): fields it predates take the values
        that describe how it was trained (``ADDED_LATER``), not today's defaults."""
        return cls.model_validate({**ADDED_LATER, **data})


def filled_in(fields: dict[str, Any], *names: str) -> dict[str, Any]:
    """``names``' values in ``fields``, today's defaults for those not given."""
    return {name: fields.get(name, TrainConfig.model_fields[name].default) for name in names}


def spread_applies(fields: dict[str, Any]) -> bool:
    """Whether D can take the label spread plane (``d_label_spread``) with these fields (today's
    defaults for those not given): a conditional dcgan with an extra conv to put it before."""
    given = filled_in(fields, "family", "conditional", "d_extra_convs")
    return given["family"] == "dcgan" and bool(given["conditional"]) and given["d_extra_convs"] >= 1


def class_loss_applies(fields: dict[str, Any]) -> bool:
    """Whether the class loss can run with these fields (today's defaults for those not given):
    a conditional D with projection conditioning (its class scores), on the fixed schedule."""
    given = filled_in(fields, "conditional", "d_conditioning", "schedule")
    return (bool(given["conditional"]) and given["d_conditioning"] == "projection"
            and given["schedule"] == "fixed")


def double_backward(loss: str, r1_gamma: float) -> str | None:
    """What makes a step differentiate D twice (the wgan-gp loss's gradient penalty, the R1
    penalty), or None."""
    if r1_gamma:
        return "the R1 penalty (r1_gamma > 0)"
    return "the wgan-gp loss" if loss == "wgan-gp" else None


def lazy_r1(loss: str, r1_gamma: float, r1_every: int) -> bool:
    """The only double backward is a lazy R1 penalty (not every D step): the steps without it
    can be one CUDA graph (``compile: graph``) and the steps with it run eagerly."""
    return bool(r1_gamma) and r1_every > 1 and loss != "wgan-gp"


def refuse_compile(compile: str, why: str, *, lazy_r1: bool = False) -> None:
    """``compile: on`` cannot hold a double backward through D (``why``); ``graph`` can, when it
    is a lazy R1 penalty (``lazy_r1``), by running those steps outside the graph."""
    if compile == "on" or (compile == "graph" and not lazy_r1):
        allowed = "off, auto, graph" if lazy_r1 else "off, auto"
        raise ValueError(f"{why} needs a double backward through D, which compile {compile} "
                         f"does not support (allowed: {allowed})")


def _reraise(check: Any, *args: Any) -> None:
    """Run a registry check inside a validator: its InvalidInput becomes the ValueError pydantic
    reports under the field being validated (the message without the repeated field name)."""
    try:
        check(*args)
    except InvalidInput as exc:
        raise ValueError(str(exc).removeprefix(f"{exc.field}: ")) from exc


def dataset_slug(name: str) -> str:
    """The dataset part of a model name, in the characters a store name allows ([a-z0-9-]):
    the registry name itself, or ``folder-<base name>`` for ``imagefolder:PATH``."""
    if not name.startswith(datasets.IMAGEFOLDER):
        return name
    base = PurePath(name[len(datasets.IMAGEFOLDER):].rstrip("/\\")).name
    cleaned = re.sub(r"[^a-z0-9]+", "-", base.lower())[:MAX_SLUG].strip("-")
    return f"folder-{cleaned}" if cleaned else "folder"
