"""From a job spec to a registered generator: train, export, evaluate, gate, register.

Used in-process by ``ganforge train`` and by the queue's worker task. Nothing touches the model
store until the generator has trained, exported with parity and been evaluated; a failure at any
step leaves the store as it was.
"""

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganforge import __version__, store
from ganforge.card import MNIST_CLASSES, ModelCard
from ganforge.generator import OnnxGenerator
from ganforge.jobs import latest_grid
from ganforge.settings import Settings, get_settings
from ganforge.spec import TrainConfig
from trainer.callbacks import Checkpointer, History, ProgressBar, SampleGrid
from trainer.checkpoint import CHECKPOINT_NAME, load_checkpoint
from trainer.data import load_mnist
from trainer.evaluate import EvalReport, evaluate
from trainer.export import OPSET, TORCH_FILE, export_onnx, save_torch_generator
from trainer.loop import Callback, GANTrainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    tag: str
    stage: str
    created: bool  # False: this run had registered the model before (a retried job)
    run_dir: Path
    steps: int
    train_seconds: float
    parity_error: float
    report: EvalReport

    def to_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "stage": self.stage, "created": self.created,
                "run_dir": str(self.run_dir), "steps": self.steps,
                "train_seconds": self.train_seconds, "parity_error": self.parity_error,
                "metrics": self.report.to_dict()}


def quality_stage(report: EvalReport, conditional: bool, settings: Settings) -> str:
    """The quality gate: production only when every threshold that applies is met."""
    ok = report.class_kl <= settings.gate_max_class_kl
    if conditional:
        ok = ok and (report.label_accuracy or 0.0) >= settings.gate_min_label_accuracy
    return store.PRODUCTION if ok else store.CANDIDATE


def new_run_dir(cfg: TrainConfig, settings: Settings) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return settings.runs_dir / f"{cfg.model_name}-{stamp}-s{cfg.seed}"


def train(cfg: TrainConfig, run_dir: Path, *, settings: Settings | None = None,
          callbacks: Sequence[Callback] = (), should_stop: Callable[[], bool] | None = None,
          progress_bar: bool = True) -> GANTrainer:
    """Train in ``run_dir``, resuming from its checkpoint when there is one."""
    settings = settings or get_settings()
    data = load_mnist(settings.data_dir, train=True, download=settings.download)
    cbs: list[Callback] = [Checkpointer(run_dir, cfg.checkpoint_every),
                           SampleGrid(run_dir, cfg.sample_every),
                           History(run_dir, cfg.sample_every), *callbacks]
    if progress_bar:
        cbs.append(ProgressBar())
    ckpt_path = run_dir / CHECKPOINT_NAME
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        cfg.check_resumes(TrainConfig.model_validate(ckpt["config"]), str(run_dir))
        trainer = GANTrainer.from_checkpoint(ckpt, data, steps=cfg.steps, device=cfg.device,
                                             callbacks=cbs, should_stop=should_stop)
        log.info("resuming %s from step %d", run_dir, trainer.step)
    else:
        trainer = GANTrainer(cfg, data, callbacks=cbs, should_stop=should_stop)
    trainer.fit()
    return trainer


def export_evaluate_register(trainer: GANTrainer, run_dir: Path, run_id: str, *,
                             settings: Settings | None = None, eval_samples: int | None = None,
                             train_seconds: float = 0.0) -> RunResult:
    settings = settings or get_settings()
    cfg, arch = trainer.cfg, trainer.arch
    onnx_path = run_dir / store.GENERATOR_FILE
    parity = export_onnx(trainer.G_ema, arch, onnx_path)
    save_torch_generator(trainer.G_ema, cfg.family, arch, run_dir / TORCH_FILE)
    card = ModelCard(
        family=cfg.family, conditional=arch.conditional, num_classes=arch.num_classes,
        latent_dim=arch.latent_dim, image_shape=arch.image_shape, config=cfg.to_dict(),
        architecture=arch.to_dict(), steps=trainer.step, train_seconds=round(train_seconds, 1),
        metrics={}, parity_max_abs_diff=parity, onnx_opset=OPSET, ganforge_version=__version__,
        class_names=MNIST_CLASSES if arch.conditional else ())
    report = evaluate(OnnxGenerator(onnx_path, card.spec), latent_dim=arch.latent_dim,
                      conditional=arch.conditional, data_dir=settings.data_dir,
                      n=eval_samples or settings.eval_samples)
    card = dataclasses.replace(card, metrics=report.to_dict())
    grid = latest_grid(run_dir)
    extra = [run_dir / TORCH_FILE, run_dir / "losses.png", *([grid] if grid else [])]
    model, created = store.register(name=cfg.model_name, run_id=run_id, onnx_path=onnx_path,
                                    card=card, stage=quality_stage(report, arch.conditional,
                                                                   settings),
                                    extra_files=extra)
    return RunResult(tag=model.tag, stage=model.stage, created=created, run_dir=run_dir,
                     steps=trainer.step, train_seconds=round(train_seconds, 1),
                     parity_error=parity, report=report)


def run(cfg: TrainConfig, run_dir: Path | None = None, *, settings: Settings | None = None,
        run_id: str | None = None, eval_samples: int | None = None,
        callbacks: Sequence[Callback] = (), should_stop: Callable[[], bool] | None = None,
        progress_bar: bool = True) -> RunResult:
    """The whole pipeline for one job."""
    settings = settings or get_settings()
    run_dir = Path(run_dir or new_run_dir(cfg, settings))
    start = time.perf_counter()
    trainer = train(cfg, run_dir, settings=settings, callbacks=callbacks,
                    should_stop=should_stop, progress_bar=progress_bar)
    seconds = time.perf_counter() - start
    return export_evaluate_register(trainer, run_dir, run_id or run_dir.name, settings=settings,
                                    eval_samples=eval_samples, train_seconds=seconds)
