"""From a job spec to a registered generator: check the data, make sure the set has a judge,
train, export, evaluate, gate, register.

Used in-process by ``ganforge train`` and by the queue's worker task. Nothing touches the model
store until the generator has trained, exported with parity and been evaluated; a failure at any
step leaves the store as it was. The one exception is the set's judge: a set without one gets
it trained and registered first (``trainer/judges.py``), since no model is registered unjudged.
"""

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganforge import __version__, store
from ganforge.card import ModelCard
from ganforge.datasets import DatasetInfo, dataset_info
from ganforge.errors import InvalidInput
from ganforge.generator import OnnxGenerator
from ganforge.jobs import latest_grid
from ganforge.settings import Settings, get_settings
from ganforge.spec import TrainConfig
from trainer import judges
from trainer.callbacks import Checkpointer, History, ProgressBar, SampleGrid
from trainer.checkpoint import CHECKPOINT_NAME, load_checkpoint
from trainer.data import Split, check_family_size, load_dataset
from trainer.evaluate import EvalReport, evaluate
from trainer.export import OPSET, TORCH_FILE, export_onnx, save_torch_generator
from trainer.fastpath import keep_freed_memory
from trainer.feature_cache import FeatureCache
from trainer.judges import Judge, JudgeKey, JudgeRecipe
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


def label_accuracy_bar(report: EvalReport, settings: Settings) -> float:
    """The label accuracy a conditional model must reach: the gate's, but never more than its
    judge itself reads real test images at, less ``gate_judge_margin``. A judge that reads
    Fashion-MNIST's real test set at 0.918 cannot read generated images at 0.95; MNIST's judge
    (0.995) leaves the gate's 0.95 as it is."""
    bar = settings.gate_min_label_accuracy
    if report.judge_accuracy is not None:
        bar = min(bar, report.judge_accuracy - settings.gate_judge_margin)
    return bar


def quality_stage(report: EvalReport, conditional: bool, settings: Settings) -> str:
    """The quality gate: production only when every threshold that applies is met."""
    ok = report.class_kl <= settings.gate_max_class_kl
    if conditional:
        ok = ok and (report.label_accuracy or 0.0) >= label_accuracy_bar(report, settings)
    return store.PRODUCTION if ok else store.CANDIDATE


def check_dataset(cfg: TrainConfig, settings: Settings) -> DatasetInfo:
    """What can be refused about the spec's data before anything is written: an image folder
    with no images or mixed modes, a conditional model of a one-class set, a side the family
    cannot build. (IDX files are looked for when loaded: :func:`load_data`.)"""
    check_family_size(cfg.family, cfg.image_size)
    info = dataset_info(cfg.dataset, settings.data_dir)
    if cfg.conditional and not info.conditional:
        raise InvalidInput("conditional", f"{cfg.dataset} has {info.num_classes} class: a "
                                          "conditional model needs at least 2; use --no-conditional")
    return info


def load_data(cfg: TrainConfig, settings: Settings) -> Split:
    """The spec's training split at its image size and channels."""
    return load_dataset(cfg.dataset, settings.data_dir, train=True, image_size=cfg.image_size,
                        channels=cfg.channels, download=settings.download, family=cfg.family)


def judge_key(cfg: TrainConfig) -> JudgeKey:
    return JudgeKey(cfg.dataset, cfg.channels, cfg.image_size)


def default_run_id(run_dir: Path) -> str:
    """A run's id in the store when no job gives one: the folder's name and a hash of its full
    path, so runs in two folders of one name (``a/run``, ``b/run``) register two models, while
    resuming a run (same folder) still finds its own."""
    where = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]
    return f"{Path(run_dir).name}-{where}"


def new_run_dir(cfg: TrainConfig, settings: Settings) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return settings.runs_dir / f"{cfg.model_name}-{stamp}-s{cfg.seed}"


def run_callbacks(cfg: TrainConfig, run_dir: Path) -> list[Callback]:
    """What every run in ``run_dir`` has hanging off its loop: the checkpoint, the sample grids
    and the loss history (``bench/step_time.py '{"callbacks": true}'`` measures their cost)."""
    return [Checkpointer(run_dir, cfg.checkpoint_every),
            SampleGrid(run_dir, cfg.sample_every, realness=cfg.realness_grid),
            History(run_dir, cfg.sample_every)]


def train(cfg: TrainConfig, run_dir: Path, *, settings: Settings | None = None,
          callbacks: Sequence[Callback] = (), should_stop: Callable[[], bool] | None = None,
          progress_bar: bool = True, data: Split | None = None) -> GANTrainer:
    """Train in ``run_dir`` (on ``data``, default the spec's set), resuming from its checkpoint
    when there is one."""
    settings = settings or get_settings()
    if settings.malloc_keep and not keep_freed_memory():
        log.info("malloc_keep: not glibc's malloc here, left as it is")
    data = data if data is not None else load_data(cfg, settings)
    cbs = [*run_callbacks(cfg, run_dir), *callbacks]
    if progress_bar:
        cbs.append(ProgressBar())
    ckpt_path = run_dir / CHECKPOINT_NAME
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        cfg.check_resumes(TrainConfig.from_stored(ckpt["config"]), str(run_dir))
        trainer = GANTrainer.from_checkpoint(ckpt, data, steps=cfg.steps, device=cfg.device,
                                             callbacks=cbs, should_stop=should_stop)
        log.info("resuming %s from step %d", run_dir, trainer.step)
    else:
        trainer = GANTrainer(cfg, data, callbacks=cbs, should_stop=should_stop)
    trainer.fit()
    return trainer


def export_evaluate_register(trainer: GANTrainer, run_dir: Path, run_id: str, *,
                             settings: Settings | None = None, eval_samples: int | None = None,
                             train_seconds: float = 0.0, judge: Judge | None = None) -> RunResult:
    settings = settings or get_settings()
    cfg, arch = trainer.cfg, trainer.arch
    judge = judge or judges.get(judge_key(cfg), settings.data_dir)
    onnx_path = run_dir / store.GENERATOR_FILE
    parity = export_onnx(trainer.G_ema, arch, onnx_path)
    save_torch_generator(trainer.G_ema, cfg.family, arch, run_dir / TORCH_FILE)
    card = ModelCard(
        family=cfg.family, conditional=arch.conditional, num_classes=arch.num_classes,
        latent_dim=arch.latent_dim, image_shape=arch.image_shape, config=cfg.to_dict(),
        architecture=arch.to_dict(), steps=trainer.step, train_seconds=round(train_seconds, 1),
        metrics={}, parity_max_abs_diff=parity, onnx_opset=OPSET, ganforge_version=__version__,
        dataset=cfg.dataset, class_names=trainer.class_names if arch.conditional else ())
    report = evaluate(OnnxGenerator(onnx_path, card.spec), latent_dim=arch.latent_dim,
                      conditional=arch.conditional, data_dir=settings.data_dir,
                      n=eval_samples or settings.eval_samples, dataset=cfg.dataset,
                      image_size=cfg.image_size, channels=cfg.channels, judge=judge,
                      cache=FeatureCache.of(settings))
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
        progress_bar: bool = True, judge_recipe: JudgeRecipe | None = None) -> RunResult:
    """The whole pipeline for one job: the data is checked and loaded and the set's judge found
    (or trained, once) before the first step, so a job never trains what it cannot judge."""
    settings = settings or get_settings()
    check_dataset(cfg, settings)
    data = load_data(cfg, settings)
    judge = judges.ensure(judge_key(cfg), settings.data_dir,
                          judge_recipe or JudgeRecipe.from_settings(settings),
                          download=settings.download)
    run_dir = Path(run_dir or new_run_dir(cfg, settings))
    start = time.perf_counter()
    trainer = train(cfg, run_dir, settings=settings, callbacks=callbacks,
                    should_stop=should_stop, progress_bar=progress_bar, data=data)
    seconds = time.perf_counter() - start
    return export_evaluate_register(trainer, run_dir, run_id or default_run_id(run_dir), settings=settings,
                                    eval_samples=eval_samples, train_seconds=seconds, judge=judge)
