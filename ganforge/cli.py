"""The ``ganforge`` command line.

    ganforge train [--family dcgan --conditional --steps 3500 --device cpu --seed 0 ...]
    ganforge train --resume RUN_DIR [--steps N]
    ganforge evaluate TAG
    ganforge models list
    ganforge train --dataset fashion-mnist | emnist-letters | imagefolder:DIR [--channels 3 --image-size 32]
    ganforge sample --model TAG --label Sneaker --n 16 --seed 42 -o out.png   (or --digit 7)
    ganforge classifier [--dataset NAME]   # train a set's judge (MNIST: reproduce the shipped one)
    ganforge worker [--queues cpu]  # a Celery worker for queued jobs
    ganforge jobs submit [train flags] | list | status ID | cancel ID | watch ID
    ganforge serve [--port 3000]    # the HTTP service

Every user error ends with one line naming the field and a non-zero exit (2), never a traceback.
This module is the one face of ganforge allowed to reach both sides: the core and the trainer
(imported inside the commands that need torch, so ``ganforge jobs`` and ``serve`` start quickly).
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from ganforge import __version__
from ganforge.errors import GanforgeError, InvalidInput
from ganforge.generator import MAX_IMAGES


def _config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, typed from the field; defaults stay with the config."""
    from ganforge.spec import TrainConfig

    group = parser.add_argument_group("training config (defaults: the reference recipe; a data set's own "
                                             "recipe changes a few: ganforge/datasets.py)")
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        helptext = f"{field.description} (default: {field.default})"
        kind = field.annotation
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=helptext)
        elif kind in (int, float):
            number = int if kind is int else float
            group.add_argument(flag, type=number, default=argparse.SUPPRESS, help=helptext,
                               metavar=number.__name__.upper())
        else:
            choices = get_args(kind) or None
            group.add_argument(flag, default=argparse.SUPPRESS, help=helptext,
                               metavar="{" + ",".join(choices) + "}" if choices else "NAME")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ganforge", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"ganforge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train, evaluate, export and register a generator")
    _config_flags(t)
    t.add_argument("--run-dir", type=Path, help="run directory (default: runs/<name>-<time>)")
    t.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its checkpoint and config")
    t.add_argument("--data-dir", type=Path, help="data root (default: GANFORGE_DATA_DIR)")
    t.add_argument("--eval-samples", type=int, help="samples the evaluator draws")
    t.add_argument("--judge-epochs", type=int, default=3,
                   help="epochs of the set's judge when it has none yet (default: 3)")
    t.add_argument("--judge-subset", type=int, default=0,
                   help="train a missing judge on the first N images (default: 0, all)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--json", action="store_true", help="print the result as JSON")

    e = sub.add_parser("evaluate", help="judge a registered generator with the classifier")
    e.add_argument("tag", help="model name or name:version")
    e.add_argument("--samples", type=int, help="samples to draw (default: GANFORGE_EVAL_SAMPLES)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--data-dir", type=Path)
    e.add_argument("--json", action="store_true")

    m = sub.add_parser("models", help="the model store")
    msub = m.add_subparsers(dest="models_command", required=True)
    ml = msub.add_parser("list", help="registered generators, newest first")
    ml.add_argument("--stage", choices=["production", "candidate"])
    ml.add_argument("--json", action="store_true")

    s = sub.add_parser("sample", help="draw images from a registered generator")
    s.add_argument("--model", required=True, help="model name or name:version")
    which = s.add_mutually_exclusive_group()
    which.add_argument("--label", help="class name or index (conditional models): Sneaker, q, 7")
    which.add_argument("--digit", help="the same as --label (digit models: 0-9)")
    s.add_argument("--n", type=int, default=1,
                   help=f"images (1-{MAX_IMAGES}); a grid when more than 1")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("-o", "--output", type=Path, required=True, help=".png or .npy")

    w = sub.add_parser("worker", help="start a Celery worker for training jobs")
    w.add_argument("--queues", help="comma-separated (default: gpu,cpu with CUDA, else cpu)")
    w.add_argument("--name", default="ganforge@%h", help="worker node name")
    w.add_argument("--loglevel", default="INFO")
    w.add_argument("--jobs", type=int, default=None,
                   help="jobs trained at once, side by side (default: GANFORGE_WORKER_JOBS, 1)")

    j = sub.add_parser("jobs", help="training jobs on the queue")
    jsub = j.add_subparsers(dest="jobs_command", required=True)
    js = jsub.add_parser("submit", help="validate and queue a job; prints its id")
    _config_flags(js)
    js.add_argument("--json", action="store_true")
    jl = jsub.add_parser("list", help="jobs, newest first")
    jl.add_argument("--limit", type=int, default=20)
    jl.add_argument("--json", action="store_true")
    for verb, text in (("status", "a job's state and progress"), ("cancel", "stop a job"),
                       ("watch", "a progress bar until the job ends")):
        jv = jsub.add_parser(verb, help=text)
        jv.add_argument("job_id")
        if verb != "watch":
            jv.add_argument("--json", action="store_true")

    sv = sub.add_parser("serve", help="start the HTTP service (bentoml serve)")
    sv.add_argument("--port", type=int, default=3000)
    sv.add_argument("--host", default="0.0.0.0")

    c = sub.add_parser("classifier", help="train a set's judge (the evaluator's classifier) and "
                                          "keep it in the model store (MNIST: the shipped weights)")
    c.add_argument("--dataset", default="mnist", help="labelled image set (default: mnist)")
    c.add_argument("--image-size", type=int, default=28, help="side the judge reads (default: 28)")
    c.add_argument("--channels", type=int, default=1, help="1 (grey) or 3 (colour) (default: 1)")
    c.add_argument("--epochs", type=int, default=3)
    c.add_argument("--subset", type=int, default=0, help="train on the first N images (0: all)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--data-dir", type=Path)
    c.add_argument("-o", "--output", type=Path,
                   help="write a weights file instead (MNIST 1x28x28 default: the shipped one)")
    return p


def _settings(data_dir: Path | None) -> Any:
    from ganforge.settings import get_settings

    settings = get_settings()
    if data_dir is not None:
        if not data_dir.is_dir():
            raise InvalidInput("data_dir", f"{data_dir} is not a directory")
        settings = settings.model_copy(update={"data_dir": data_dir})
    elif settings.download and "data_dir" not in settings.model_fields_set:
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # the default ./data, for downloads
    return settings


def cmd_train(args: argparse.Namespace) -> int:
    from ganforge.spec import TrainConfig

    # what can be checked without torch is checked before torch is imported (seconds): a bad
    # flag answers at once
    given = {k: v for k, v in vars(args).items() if k in TrainConfig.model_fields}
    cfg = None if args.resume is not None else TrainConfig.model_validate(given)
    if args.eval_samples is not None and not 100 <= args.eval_samples <= 200_000:
        raise InvalidInput("eval_samples", f"must be between 100 and 200000, got {args.eval_samples}")
    recipe = _judge_recipe(args.judge_epochs, args.judge_subset, "judge_")
    from trainer import pipeline
    from trainer.checkpoint import CHECKPOINT_NAME, load_checkpoint

    if cfg is None:
        ckpt_path = args.resume / CHECKPOINT_NAME
        if not ckpt_path.exists():
            raise InvalidInput("resume", f"no {CHECKPOINT_NAME} in {args.resume}")
        cfg = TrainConfig.resumed(load_checkpoint(ckpt_path)["config"], given)
        run_dir = args.resume
    else:
        run_dir = args.run_dir
    settings = _settings(args.data_dir)
    from trainer.loop import resolve_device

    resolve_device(cfg.device)  # fail before any file is written
    pipeline.check_dataset(cfg, settings)
    result = pipeline.run(cfg, run_dir, settings=settings, eval_samples=args.eval_samples,
                          progress_bar=not args.no_progress, judge_recipe=recipe)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        r = result.report
        print(f"registered {result.tag} (stage={result.stage}) from {result.run_dir}")
        print(f"  steps {result.steps} in {result.train_seconds:.0f} s | parity {result.parity_error:.2e}")
        print(f"  {r.summary()}")
    return 0


def _judge_recipe(epochs: int, subset: int, prefix: str = "") -> Any:
    if not 1 <= epochs <= 100:
        raise InvalidInput(f"{prefix}epochs", f"must be between 1 and 100, got {epochs}")
    if subset < 0:
        raise InvalidInput(f"{prefix}subset", f"must be 0 (all) or more, got {subset}")
    from trainer.judges import JudgeRecipe

    return JudgeRecipe(epochs=epochs, subset=subset)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ganforge import store
    from ganforge.generator import OnnxGenerator
    from trainer.evaluate import evaluate
    from trainer.feature_cache import FeatureCache

    settings = _settings(args.data_dir)
    model = store.get_model(args.tag)
    card = model.card
    channels, size, _ = card.image_shape
    report = evaluate(OnnxGenerator(model.onnx_path, model.spec), latent_dim=model.spec.latent_dim,
                      conditional=model.spec.conditional, data_dir=settings.data_dir,
                      n=args.samples or settings.eval_samples, seed=args.seed,
                      dataset=card.dataset, image_size=size, channels=channels,
                      cache=FeatureCache.of(settings))
    if args.json:
        print(json.dumps({"tag": model.tag, **report.to_dict()}, indent=2))
    else:
        print(f"{model.tag}: {report.summary()}")
        if report.per_class_accuracy:
            names = card.class_names or tuple(map(str, range(len(report.per_class_accuracy))))
            print("  per class: " + " ".join(f"{n}:{a:.3f}"
                                             for n, a in zip(names, report.per_class_accuracy,
                                                             strict=False)))
        print(f"  class histogram: {report.class_histogram}")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from ganforge import store

    found = store.list_models(stage=args.stage)
    if args.json:
        print(json.dumps([{"tag": m.tag, "stage": m.stage, "created": m.created.isoformat(),
                           "metadata": m.card.to_metadata()} for m in found], indent=2))
        return 0
    if not found:
        print("no models registered (train one: ganforge train)")
        return 0
    print(f"{'TAG':<42} {'STAGE':<10} {'DATASET':<16} {'SHAPE':<8} {'STEPS':>6} {'ACC':>6} "
          f"{'KL':>7} {'FCD':>7}  CREATED")
    for m in found:
        c = m.card
        shape = "x".join(map(str, c.image_shape))
        print(f"{m.tag:<42} {m.stage:<10} {c.dataset[:16]:<16} {shape:<8} {c.steps:>6} "
              f"{_fmt(c.label_accuracy, '.3f'):>6} {_fmt(c.class_kl, '.4f'):>7} "
              f"{_fmt(c.fcd, '.2f'):>7}  {m.created:%Y-%m-%d %H:%M}")
    return 0


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from ganforge import store
    from ganforge.card import resolve_label
    from ganforge.generator import OnnxGenerator
    from ganforge.images import encode_png, make_grid, to_uint8

    if not 1 <= args.n <= MAX_IMAGES:
        raise InvalidInput("n", f"must be between 1 and {MAX_IMAGES}, got {args.n}")
    if args.output.suffix not in (".png", ".npy"):
        raise InvalidInput("output", f"must end in .png or .npy, got {args.output.name}")
    model = store.get_model(args.model)
    field, value = ("digit", args.digit) if args.digit is not None else ("label", args.label)
    label = None if value is None else resolve_label(model.card, value, field)
    images = OnnxGenerator(model.onnx_path, model.spec).sample(args.n, args.seed, label)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.output.suffix == ".npy":
        np.save(args.output, images)
    else:
        pixels = to_uint8(images)
        args.output.write_bytes(encode_png(pixels[0] if args.n == 1 else make_grid(pixels)))
    print(f"wrote {args.n} image(s) from {model.tag} to {args.output}")
    return 0


def cmd_classifier(args: argparse.Namespace) -> int:
    from ganforge.datasets import check_request

    check_request(args.dataset, image_size=args.image_size, channels=args.channels)
    recipe = _judge_recipe(args.epochs, args.subset)
    settings = _settings(args.data_dir)
    from trainer import classifier, judges

    key = judges.JudgeKey(args.dataset, args.channels, args.image_size)
    if args.output is not None or key.shipped:  # a weights file (MNIST: the shipped one)
        from trainer.data import load_dataset

        def split(train: bool) -> Any:
            s = load_dataset(args.dataset, settings.data_dir, train=train, image_size=args.image_size,
                             channels=args.channels, download=settings.download)
            return s.head(args.subset) if args.subset else s

        model, info = classifier.train_classifier(split(True), split(False), epochs=args.epochs,
                                                  seed=args.seed)
        classifier.save(model, info, args.output or classifier.WEIGHTS)
        print(json.dumps({**info, "weights": str(args.output or classifier.WEIGHTS)}))
        return 0
    recipe = judges.JudgeRecipe(epochs=recipe.epochs, subset=recipe.subset, seed=args.seed)
    judge = judges.train(key, settings.data_dir, recipe, download=settings.download, log_line=print)
    print(json.dumps({**judge.info, "tag": judge.source, "classes": len(judge.class_names)}))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from ganforge.queue import QUEUES, app
    from ganforge.settings import get_settings

    jobs = get_settings().worker_jobs if args.jobs is None else args.jobs
    if not 1 <= jobs <= 64:
        raise InvalidInput("jobs", f"must be between 1 and 64, got {jobs}")
    unknown = set(args.queues.split(",")) - set(QUEUES) if args.queues else set()
    if unknown:
        raise InvalidInput("queues", f"unknown {sorted(unknown)}; allowed: {', '.join(QUEUES)}")
    import torch

    from trainer import worker  # noqa: F401  (registers the train_gan task on the app)

    queues = args.queues or ("gpu,cpu" if torch.cuda.is_available() else "cpu")
    # solo pool: the job runs in this process, so CUDA is never initialised in a forked parent;
    # K jobs at once: a thread each in this process (one CUDA context, a stream per job)
    pool = ["--pool=solo", "--concurrency=1"] if jobs == 1 else ["--pool=threads", f"--concurrency={jobs}"]
    if jobs > 1:
        from trainer.loop import share_process

        share_process()
    app.worker_main(["worker", *pool, f"--queues={queues}",
                     f"--hostname={args.name}", f"--loglevel={args.loglevel}",
                     "--without-gossip", "--without-mingle"])
    return 0


def _print_status(st: Any) -> None:
    p = st.progress
    line = f"{st.id}  {st.state}"
    if p.get("step") is not None:
        line += f"  step {p['step']}/{p.get('total')}"
        if p.get("resumed_from"):
            line += f" (resumed from {p['resumed_from']})"
        if p.get("images_per_s"):
            line += f"  {p['images_per_s']:.0f} img/s"
        if p.get("eta_s") is not None:
            line += f"  eta {p['eta_s']:.0f} s"
        if p.get("d_loss") is not None:
            line += f"  d {p['d_loss']:.3f} g {p['g_loss']:.3f}"
    if st.result:
        line += f"  -> {st.result.get('tag')} ({st.result.get('stage')})"
    if st.error:
        line += f"  error: {st.error}"
    print(line)


def cmd_jobs(args: argparse.Namespace) -> int:
    from ganforge import jobs
    from ganforge.spec import TrainConfig

    verb = args.jobs_command
    if verb == "submit":
        spec = {k: v for k, v in vars(args).items() if k in TrainConfig.model_fields}
        job_id = jobs.submit(spec)
        print(json.dumps({"job_id": job_id}) if args.json else job_id)
        return 0
    if verb == "list":
        found = jobs.list_jobs(args.limit)
        if args.json:
            print(json.dumps([st.to_dict() for st in found], indent=2))
        for st in [] if args.json else found:
            _print_status(st)
        return 0
    if verb == "watch":
        return _watch(args.job_id)
    st = jobs.status(args.job_id) if verb == "status" else jobs.cancel(args.job_id)
    if args.json:
        print(json.dumps(st.to_dict(), indent=2))
    else:
        _print_status(st)
    return 0


def _watch(job_id: str) -> int:
    import time

    from tqdm import tqdm

    from ganforge import jobs

    st = jobs.status(job_id)
    bar = tqdm(total=st.spec.get("steps"), desc=job_id[:8], unit="step", dynamic_ncols=True)
    while True:
        p = st.progress
        if p.get("step") is not None:
            bar.n = p["step"]
            bar.set_postfix(state=st.state, img_s=p.get("images_per_s"), refresh=False)
            bar.refresh()
        if st.finished:
            break
        time.sleep(1.0)
        st = jobs.status(job_id)
    bar.close()
    _print_status(st)
    return 0 if st.state == "SUCCESS" else 1


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    if not 1 <= args.port <= 65535:
        raise InvalidInput("port", f"must be between 1 and 65535, got {args.port}")
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    os.execv(bentoml, [bentoml, "serve", "services.service:Ganforge", "--port", str(args.port),
                       "--host", args.host])


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample,
            "classifier": cmd_classifier, "worker": cmd_worker, "jobs": cmd_jobs,
            "serve": cmd_serve}


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{field}: {msg} (got {err.get('input')!r})")
    return "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = cmd_models_list if args.command == "models" else COMMANDS[args.command]
    try:
        return handler(args)
    except ValidationError as exc:
        print(f"ganforge: error: {_validation_message(exc)}", file=sys.stderr)
    except GanforgeError as exc:
        print(f"ganforge: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("ganforge: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
