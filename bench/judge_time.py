"""Seconds the evaluator's judge takes over a test split, by images a forward, in fresh processes.

    python bench/judge_time.py                       # MNIST: the default batch, then 1000
    python bench/judge_time.py --batches 0 1000 100 --rounds 3
    python bench/judge_time.py --cache --rounds 3    # the first process writes, the rest read

What every evaluating process pays once before its first FCD (``trainer.evaluate._splits``: the
judge's features of the whole test split). Each (batch, round) runs in a process of its own, so
each is a first call, as in a worker or ``ganforge train``; the batches take turns round by
round. Malloc is set as a training process's (``trainer.fastpath.keep_freed_memory``: the
evaluation runs after training, in the same process) unless ``--malloc-as-is``. Printed a row
each: wall seconds, user and system CPU seconds, minor page faults (``getrusage``), and the
largest difference of its features, over its rounds, from the first batch's first round. With
``--cache`` each process asks ``trainer.evaluate.real_features`` with a fresh cache folder shared
by the rounds: the first round computes and writes the file, the later ones read it back.
"""

import argparse
import json
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time
from pathlib import Path
import torch
from trainer import classifier, judges
from trainer.data import load_dataset
from trainer.fastpath import keep_freed_memory
args = json.loads(sys.argv[1])
if args["keep"]:
    keep_freed_memory()
data_dir = Path(args["data_dir"]).resolve()
judge = judges.get(judges.JudgeKey(args["dataset"], args["channels"], args["size"]), data_dir)
test = load_dataset(args["dataset"], data_dir, train=False, image_size=args["size"],
                    channels=args["channels"])
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
if args["cache"]:
    from trainer.evaluate import real_features
    from trainer.feature_cache import FeatureCache
    feats = torch.from_numpy(real_features(judge, test, cache=FeatureCache(Path(args["cache"])))).float()
else:
    rows = torch.arange(len(test))
    feats = torch.cat([classifier.predict(judge.model, test.normalized(rows[i : i + 1000]),
                                          args["batch"] or None)[1]
                       for i in range(0, len(test), 1000)])
wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
torch.save(feats, args["out"])
print(json.dumps({"wall": wall, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
                  "minflt": r1.ru_minflt - r0.ru_minflt}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[0, 1000],
                   help="images a forward (0: classifier.judge_batch, the default)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--malloc-as-is", action="store_true", help="leave glibc's malloc defaults")
    p.add_argument("--cache", action="store_true",
                   help="through the evaluator's feature cache (one batch, the default)")
    args = p.parse_args()
    import torch

    from ganforge.settings import get_settings
    from trainer.classifier import judge_batch

    root = Path(__file__).resolve().parent.parent
    out = Path("/tmp") / f"judge_time_{time.time_ns()}"
    print(f"# {platform.node()} torch {torch.__version__} threads {torch.get_num_threads()} "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')} | {args.dataset} test split at {args.size}, "
          f"{args.rounds} rounds, a fresh process each | malloc: "
          f"{'as it is' if args.malloc_as_is else 'kept'} | default batch {judge_batch(args.size)}",
          flush=True)
    if args.cache:
        args.batches = [0]
    cache = tempfile.mkdtemp(prefix="judge_time_cache_") if args.cache else ""
    runs: dict[int, list[dict[str, float]]] = {b: [] for b in args.batches}
    for r in range(args.rounds):
        for b in args.batches:
            child = {"batch": b, "keep": not args.malloc_as_is, "cache": cache, "dataset": args.dataset,
                     "size": args.size, "channels": args.channels, "out": f"{out}_{b}_{r}.pt",
                     "data_dir": str(get_settings().data_dir)}
            done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(child)], cwd=root,
                                  capture_output=True, text=True, check=True)
            runs[b].append(json.loads(done.stdout.strip().splitlines()[-1]))
    first = torch.load(f"{out}_{args.batches[0]}_0.pt")

    def diff(b: int) -> float:  # over the batch's rounds (with --cache: computed, then read back)
        return max(float((torch.load(f"{out}_{b}_{r}.pt") - first).abs().max())
                   for r in range(args.rounds))

    print("| images a forward | wall s (median; rounds) | user s | system s | minor faults | "
          "max feature difference from the first |")
    print("|---|---|---|---|---|---|")
    for b in args.batches:
        rs = runs[b]

        def med(k: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.median(r[k] for r in rs)

        name = f"{b or judge_batch(args.size)}{' (default)' if not b else ''}"
        walls = ", ".join(f"{r['wall']:.2f}" for r in rs)
        print(f"| {name} | {med('wall'):.2f} ({walls}) | "
              f"{med('user'):.2f} | {med('sys'):.2f} | {med('minflt'):,.0f} | {diff(b):.1e} |")
    for f in Path(out).parent.glob(f"{Path(out).name}_*.pt"):
        f.unlink()
    if cache:
        print("# --cache: round 1 computed the features and wrote them; the later rounds read them")
        shutil.rmtree(cache)
    print(f"# {resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime:.0f} s of CPU in all")


if __name__ == "__main__":
    main()
