"""The fast step path (trainer/fastpath.py): the same training as the plain loop, faster.

Each option that runs on the CPU is checked against the plain loop over 50 steps: the losses
agree to a tolerance (exactly where nothing numerical changes), and resuming stays bit-exact.
The CUDA variants run the same assertions on a GPU and are skipped without one.
"""

import platform
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import models
import trainer.fastpath as fastpath
import trainer.loop as loop
import trainer.pipeline as pipeline
from ganforge.errors import InvalidInput, TrainingCancelled, TrainingDiverged
from ganforge.settings import Settings
from models.losses import GANLoss
from trainer.callbacks import Checkpointer
from trainer.checkpoint import load_checkpoint
from trainer.data import batch_indices
from trainer.fastpath import CUDA_LOG_EVERY, EpochOrder, StepGraph, keep_adam_kind, resolve, tensor_lr
from trainer.loop import Callback, GANTrainer

ROOT = Path(__file__).resolve().parents[2]
# The 50-step comparisons run at the architecture and rate their tolerances were measured at
# (two D convolutions, lr 4e-4): the default's third convolution and higher rate make the run
# more chaotic, so the same rounding differences grow faster (channels_last on the CPU: 8e-4 at
# step 50 without, 4e-2 with, both 0 for the first 5 steps).
# test_fast_options_match_the_default_recipe_early checks the defaults themselves. R1 is off
# here (the tests that take it say so): compile on cannot hold it.
PLAIN = dict(log_every=1, adam="torch", compile="off", amp="off", channels_last="off",
             lr_g=4e-4, lr_d=4e-4, d_extra_convs=0, r1_gamma=0.0)
CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                     reason="needs a CUDA device"))
DEVICES = ["cpu", CUDA]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: two threads on two shared, busy cores spin against each other and
    the other processes (50 tiny steps: ~30 s instead of ~1.6 s). Both runs a test compares use
    the same setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def full_fp32():
    """On CUDA, convolutions default to TF32 (10 bits of mantissa) and NCHW and NHWC pick
    different kernels: the comparisons here are of the options' arithmetic, so in full fp32
    (measured on an H200: channels_last against NCHW drifted 2% by step 2 under TF32)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


class Losses(Callback):
    """The losses each step's logs hold, keyed by the step they were read at."""

    def __init__(self) -> None:
        self.read: dict[int, tuple[float, float]] = {}
        self.logs: list[dict[str, float]] = []

    def on_step_end(self, trainer: GANTrainer, logs: dict[str, float]) -> None:
        self.logs.append(dict(logs))
        if "losses_at" not in logs:
            self.read[trainer.step] = (logs["d_loss"], logs["g_loss"])


def train(cfg, data) -> tuple[GANTrainer, Losses]:
    losses = Losses()
    t = GANTrainer(cfg, data, callbacks=[losses])
    t.fit()
    return t, losses


_PLAIN: dict[str, tuple[GANTrainer, Losses]] = {}


def plain_run(make_cfg, data, device: str) -> tuple[GANTrainer, Losses]:
    """50 steps of the plain loop on ``device``, trained once for all the tests that compare."""
    if device not in _PLAIN:
        _PLAIN[device] = train(make_cfg(steps=50, device=device, **PLAIN), data)
    return _PLAIN[device]


def weights(t: GANTrainer) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v.float().cpu() for name, net in (("G", t.G), ("D", t.D), ("E", t.G_ema))
            for k, v in net.state_dict().items()}


def test_epoch_order_is_batch_indices_sequence() -> None:
    """Across epoch boundaries, and with fewer images than a batch."""
    for n, b in ((100, 16), (10, 16), (64, 64)):
        order = EpochOrder(n, b, seed=7, device=torch.device("cpu"))
        for step in range(3 * max(n // b, 1) + 2):
            assert torch.equal(order(step), batch_indices(n, b, step, 7)), (n, b, step)
    # the permutation is built once per epoch, not once per step
    order = EpochOrder(100, 16, seed=7, device=torch.device("cpu"))
    order(0)
    perm = order.perm
    order(5)
    assert order.perm is perm
    order(6)
    assert order.perm is not perm


@pytest.mark.parametrize("native_bf16", [False, True])
def test_auto_is_the_plain_loop_on_cpu_and_the_fast_path_on_cuda(make_cfg, monkeypatch,
                                                                  native_bf16) -> None:
    """The CPU: the plain loop, in bf16 with channels_last where the CPU has bf16 in hardware."""
    monkeypatch.setattr(fastpath, "cpu_has_native_bf16", lambda: native_bf16)
    cfg = make_cfg()
    cpu = resolve(cfg, torch.device("cpu"), gradient_penalty=False)
    assert (cpu.log_every, cpu.adam, cpu.compile, cpu.graph, cpu.amp, cpu.channels_last) == (
        1, "torch", False, False, native_bf16, native_bf16)
    off = resolve(make_cfg(amp="off"), torch.device("cpu"), gradient_penalty=False)
    assert not off.amp and not off.channels_last  # channels_last alone adds little on the CPU
    assert resolve(cfg, torch.device("cpu"), False, auto_amp=not native_bf16).amp is not native_bf16
    cuda = resolve(cfg, torch.device("cuda"), gradient_penalty=False)
    assert (cuda.log_every, cuda.adam, cuda.compile, cuda.graph, cuda.amp, cuda.channels_last) == (
        CUDA_LOG_EVERY, "fused", False, True, False, True)  # the whole step in one CUDA graph
    assert cfg.r1_gamma and resolve(cfg, torch.device("cuda"), gradient_penalty=True).graph  # lazy R1
    for every_step in (make_cfg(loss="wgan-gp"), make_cfg(r1_every=1)):
        penalty = resolve(every_step, torch.device("cuda"), gradient_penalty=True)
        assert not penalty.compile and not penalty.graph
    assert resolve(make_cfg(compile="on"), torch.device("cuda"), False).compile
    chosen = resolve(make_cfg(log_every=7, adam="foreach", channels_last="off"), torch.device("cuda"), False)
    assert (chosen.log_every, chosen.adam, chosen.channels_last) == (7, "foreach", False)


def test_compile_with_a_gradient_penalty_is_an_input_error(make_cfg, mnist_train) -> None:
    """Refused with the spec (before a judge is trained or a file written), and again by the
    trainer for a config that skipped validation."""
    with pytest.raises(ValidationError, match="compile\n.*wgan-gp loss needs a double backward"):
        make_cfg(loss="wgan-gp", compile="on")
    with pytest.raises(InvalidInput, match="compile"):
        GANTrainer(make_cfg().model_copy(update={"loss": "wgan-gp", "compile": "on"}), mnist_train)


@pytest.mark.parametrize("device", DEVICES)
def test_reading_losses_every_n_steps_changes_nothing_else(make_cfg, mnist_train, device) -> None:
    """log_every only decides when losses reach the host: same weights, same values when read."""
    plain, plain_losses = plain_run(make_cfg, mnist_train, device)
    windowed, losses = train(make_cfg(steps=50, device=device, **{**PLAIN, "log_every": 7}), mnist_train)
    assert sorted(losses.read) == [1, 7, 14, 21, 28, 35, 42, 49, 50]
    if device == "cpu":  # CUDA's convolution backward adds in no fixed order: the same to 1e-3
        for step, values in losses.read.items():
            assert values == plain_losses.read[step]
        assert all(torch.equal(a, b) for a, b in zip(weights(plain).values(), weights(windowed).values(),
                                                     strict=True))
    for step, values in losses.read.items():
        assert values == pytest.approx(plain_losses.read[step], rel=1e-3, abs=1e-3), step
    between = losses.logs[2]  # step 3: the values read at step 1, labelled so
    assert between["step"] == 3 and between["losses_at"] == 1
    assert between["d_loss"] == losses.read[1][0] and between["images_per_s"] > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options, tol", [
    # rounding differences grow over 50 GAN steps: ~1e-3 relative for fp32 options measured
    # with 2 threads (4e-7 with 1), ~1.5e-2 for bf16, which keeps 8 bits of mantissa
    ({"adam": "foreach"}, 1e-2),
    ({"adam": "fused"}, 1e-2),
    ({"channels_last": "on"}, 1e-2),
    ({"adam": "fused", "channels_last": "on", "log_every": 10}, 1e-2),
    ({"amp": "bf16"}, 0.1),
    # auto: bf16 on a CPU with bf16 in hardware, hence bf16's tolerance
    ({"log_every": 0, "adam": "auto", "compile": "auto", "amp": "auto", "channels_last": "auto"}, 0.1),
    ({"compile": "graph"}, 1e-2),  # the whole step in one CUDA graph (the CPU: static buffers)
    ({"compile": "graph", "adam": "fused", "channels_last": "on", "log_every": 10}, 1e-2),
])
def test_fast_options_give_the_plain_loops_losses(make_cfg, mnist_train, device, options, tol) -> None:
    """50 steps with the option on against the plain loop: the losses at every step read agree."""
    if device == "cpu" and options.get("compile") == "auto":
        options = {**options, "compile": "off"}  # auto is off on the CPU anyway; said explicitly
    _, plain = plain_run(make_cfg, mnist_train, device)
    _, fast = train(make_cfg(steps=50, device=device, **{**PLAIN, **options}), mnist_train)
    assert 50 in fast.read and len(fast.read) >= (2 if options.get("log_every") == 0 else 5)
    for step, (d, g) in fast.read.items():
        pd, pg = plain.read[step]
        assert d == pytest.approx(pd, abs=tol, rel=tol) and g == pytest.approx(pg, abs=tol, rel=tol), step


@pytest.mark.parametrize("options", [
    {"adam": "foreach"}, {"channels_last": "on"}, {"compile": "graph"},
    {"compile": "graph", "adam": "fused", "channels_last": "on"},
])
def test_fast_options_match_the_default_recipe_early(make_cfg, mnist_train, options) -> None:
    """The default architecture, rates, R1 and class loss (third D conv, lr 6e-4, R1 at step 1),
    before rounding differences have had steps to grow: the first 5 steps' losses agree to 2e-3.
    (Without the class loss they agree to 1e-4; its class scores, ~10 in size at the start, grow
    channels_last's rounding to 4e-4 by step 3 and 1e-3 by step 4. A term left out moves them by
    far more: ``test_the_graph_takes_the_class_loss_as_the_plain_loop_does``.)"""
    plain = {k: v for k, v in PLAIN.items() if k not in ("lr_g", "lr_d", "d_extra_convs", "r1_gamma")}
    _, want = train(make_cfg(steps=5, **plain), mnist_train)
    _, got = train(make_cfg(steps=5, **{**plain, **options}), mnist_train)
    assert sorted(got.read) == [1, 2, 3, 4, 5]
    for step, (d, g) in got.read.items():
        assert (d, g) == pytest.approx(want.read[step], abs=2e-3, rel=2e-3), step


def test_the_graph_takes_the_class_loss_as_the_plain_loop_does(make_cfg, mnist_train) -> None:
    recipe = {**PLAIN, "class_loss": 0.5}
    _, want = train(make_cfg(steps=5, **recipe), mnist_train)
    _, got = train(make_cfg(steps=5, **{**recipe, "compile": "graph"}), mnist_train)
    _, without = train(make_cfg(steps=5, **{**PLAIN, "class_loss": 0.0}), mnist_train)
    assert sorted(got.read) == [1, 2, 3, 4, 5]
    for step, (d, g) in got.read.items():
        assert (d, g) == pytest.approx(want.read[step], abs=1e-4, rel=1e-4), step
    # the first D step starts from the same weights: its loss differs by the class term alone
    assert want.read[1][0] > without.read[1][0] + 0.5
    assert want.read[1][1] != pytest.approx(without.read[1][1], abs=1e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("changes", [
    {"adam": "fused", "channels_last": "on", "log_every": 3},  # the reference recipe, fast options
    {"amp": "bf16", "channels_last": "on"},  # the CPU's auto where it has bf16 in hardware
    {"family": "mlp", "conditional": False, "loss": "wgan-gp", "d_steps": 2, "adam": "foreach",
     "log_every": 5},  # dropout and the penalty draw from the global RNG
    {"compile": "graph", "adam": "fused", "log_every": 3},  # resumed: a fresh capture
    {"family": "mlp", "compile": "graph", "d_steps": 2},  # dropout inside the graph
    # the recipe's options: a schedule of the step, DiffAugment's draws, lazy R1
    {"lr_decay": "linear", "augment": "translation+cutout", "r1_gamma": 1.0, "r1_every": 3},
    {"compile": "graph", "lr_decay": "linear", "augment": "translation", "log_every": 3},
    # R1's steps outside the graph; D's label spread plane (R1 differentiates through it too)
    {"compile": "graph", "r1_gamma": 1.0, "r1_every": 3, "d_label_spread": True},
    {"lr_decay": "tail", "lr_tail": 0.5, "d_label_spread": True, "amp": "bf16"},
    # the class loss: D's class scores in both steps, R1 through a column of D's output
    {"compile": "graph", "class_loss": 0.5, "r1_gamma": 1.0, "r1_every": 3},
])
def test_resume_is_exact_with_fast_options(make_cfg, mnist_train, tmp_path, device, changes) -> None:
    """4 steps, a checkpoint, the other 4 from it equals 8 in one go (CUDA: to float tolerance, its
    embedding and convolution backward kernels add in no fixed order)."""
    straight = GANTrainer(make_cfg(steps=8, device=device, **changes), mnist_train)
    straight.fit()
    # the same 8-step run, stopped after 4 (as a lost worker's): lr_decay is a schedule of 8 steps
    runs: list[GANTrainer] = []
    first = GANTrainer(make_cfg(steps=8, device=device, **changes), mnist_train,
                       callbacks=[Checkpointer(tmp_path, every=4)],
                       should_stop=lambda: runs[0].step >= 4)
    runs.append(first)
    with pytest.raises(TrainingCancelled):
        first.fit()
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["step"] == 4
    del first
    torch.manual_seed(12345)  # whatever happened in between must not matter
    resumed = GANTrainer.from_checkpoint(ckpt, mnist_train, steps=8)
    resumed.fit()
    assert resumed.step == 8
    for (name, a), b in zip(weights(straight).items(), weights(resumed).values(), strict=True):
        if device == "cpu":
            assert torch.equal(a, b), name
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_a_run_resumes_in_the_precision_it_started_in(make_cfg, mnist_train, tmp_path,
                                                      monkeypatch) -> None:
    """amp: auto means bf16 on a CPU with bf16 in hardware, fp32 elsewhere; a run moved to
    another machine (or resumed by a newer ganforge) goes on in its own precision, and a
    checkpoint from before bf16 on the CPU (no ``amp`` key) in fp32."""
    monkeypatch.setattr(fastpath, "cpu_has_native_bf16", lambda: True)
    first = GANTrainer(make_cfg(steps=2), mnist_train, callbacks=[Checkpointer(tmp_path, every=100)])
    first.fit()
    assert first.fast.amp and first.fast.channels_last
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["amp"] is True and ckpt["config"]["amp"] == "auto"
    monkeypatch.setattr(fastpath, "cpu_has_native_bf16", lambda: False)
    assert not GANTrainer(make_cfg(steps=2), mnist_train).fast.amp  # a new run here: fp32
    resumed = GANTrainer.from_checkpoint(ckpt, mnist_train, steps=4)
    assert resumed.fast.amp and resumed.fast.channels_last and resumed.cfg.amp == "auto"
    resumed.fit()
    assert resumed.step == 4
    monkeypatch.setattr(fastpath, "cpu_has_native_bf16", lambda: True)
    del ckpt["amp"]
    older = GANTrainer.from_checkpoint(ckpt, mnist_train, steps=4)
    assert not older.fast.amp and not older.fast.channels_last


def test_resume_on_another_adam_kernel_keeps_this_runs_choice(make_cfg, mnist_train, tmp_path) -> None:
    """A checkpoint written by fused Adam (a GPU's default) resumes on the plain loop's Adam."""
    first = GANTrainer(make_cfg(steps=2, adam="fused"), mnist_train,
                       callbacks=[Checkpointer(tmp_path, every=100)])
    first.fit()
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    ckpt["config"]["adam"] = "torch"  # as if the spec said so; GANTrainer reads it from here
    resumed = GANTrainer.from_checkpoint(ckpt, mnist_train, steps=4)
    assert resumed.opt_g.param_groups[0]["fused"] is None
    resumed.fit()
    assert resumed.step == 4


def test_a_graph_runs_checkpoint_resumes_on_the_plain_loop(make_cfg, mnist_train, tmp_path) -> None:
    """A GPU run under compile: graph writes capturable Adam groups; resumed on the CPU's plain
    loop they must drop it (PyTorch's own Adam refuses capturable on the CPU)."""
    first = GANTrainer(make_cfg(steps=2, compile="graph", adam="fused"), mnist_train,
                       callbacks=[Checkpointer(tmp_path, every=100)])
    first.fit()
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    for opt in ("opt_g", "opt_d"):  # as a CUDA graph run writes them
        for group in ckpt[opt]["param_groups"]:
            group["capturable"] = True
    ckpt["config"].update(compile="off", adam="torch")
    resumed = GANTrainer.from_checkpoint(ckpt, mnist_train, steps=4)
    assert resumed.opt_g.param_groups[0]["capturable"] is False
    resumed.fit()
    assert resumed.step == 4


def test_divergence_inside_a_window_names_its_step(make_cfg, mnist_train, monkeypatch) -> None:
    """With losses read every 5 steps, a NaN at step 3 is reported at step 5, naming step 3."""
    calls = {"n": 0}

    def d_loss(real, fake, real_label=1.0):
        calls["n"] += 1
        return (real + fake).mean() * (float("nan") if calls["n"] >= 3 else 1.0)

    monkeypatch.setitem(models.LOSSES, "hinge", GANLoss(d_loss, lambda f: f.mean()))
    t = GANTrainer(make_cfg(steps=20, log_every=5), mnist_train)
    with pytest.raises(TrainingDiverged, match="at step 3:"):
        t.fit()
    assert t.step == 5


def test_compile_plumbing_on_cpu(make_cfg, mnist_train, monkeypatch) -> None:
    """compile=on through dynamo and AOT autograd (the ``aot_eager`` backend: inductor's own
    kernels take ~2 minutes to build on 2 CPU cores, too slow here; the CUDA test below runs
    the real thing): the compiled modules are what the steps call, with the plain loop's losses."""
    monkeypatch.setattr(loop, "compile_module", partial(torch.compile, backend="aot_eager"))
    t, fast = train(make_cfg(steps=3, **{**PLAIN, "compile": "on"}), mnist_train)
    assert t.run_G is not t.G and t.run_D is not t.D
    _, plain = train(make_cfg(steps=3, **PLAIN), mnist_train)
    for step, (d, g) in fast.read.items():
        assert d == pytest.approx(plain.read[step][0], abs=1e-4)
        assert g == pytest.approx(plain.read[step][1], abs=1e-4)


def test_a_failing_compiled_step_is_undone_and_taken_again_without_compile(make_cfg, mnist_train,
                                                                           monkeypatch) -> None:
    """A compiler fault while graphs are recorded (here: the G step's D call of step 2, after D
    was already updated) costs the run its compile, not its numbers: the same weights as the
    plain loop, exactly."""
    calls = {"n": 0}

    def flaky(module):
        def run(*args, **kwargs):
            calls["n"] += 1  # a step calls G once and D three times
            if calls["n"] == 8:
                raise RuntimeError("cudagraph says no")
            return module(*args, **kwargs)
        return run

    monkeypatch.setattr(loop, "compile_module", flaky)
    t, _ = train(make_cfg(steps=6, **{**PLAIN, "compile": "on"}), mnist_train)
    plain, _ = train(make_cfg(steps=6, **PLAIN), mnist_train)
    assert "cudagraph says no" in t.compile_error
    assert not t.fast.compile and t.run_D is t.D and t.step == 6
    assert all(torch.equal(a, b) for a, b in zip(weights(plain).values(), weights(t).values(), strict=True))


def test_a_failing_step_graph_is_undone_and_the_run_goes_on_plain(make_cfg, mnist_train,
                                                                 monkeypatch) -> None:
    """compile: graph, and the capture (here: step 3's) fails: the run rolls that step back and
    goes on without the graph, with the plain loop's weights."""
    graph_fails_at(monkeypatch, 2, "capture says no")
    t, _ = train(make_cfg(steps=6, **{**PLAIN, "compile": "graph"}), mnist_train)
    plain, _ = train(make_cfg(steps=6, **PLAIN), mnist_train)
    assert "capture says no" in t.compile_error and t.graph is None and not t.fast.graph
    assert t.step == 6
    assert_same_weights(plain, t)


def graph_fails_at(monkeypatch, step: int, message: str) -> None:
    """``StepGraph.step`` raises at the trainer's ``step`` (a capture or replay fault)."""
    real_step = StepGraph.step

    def flaky(self, t):
        if t.step == step:
            raise RuntimeError(message)
        return real_step(self, t)

    monkeypatch.setattr(StepGraph, "step", flaky)


def assert_same_weights(want: GANTrainer, got: GANTrainer) -> None:
    for (name, a), b in zip(weights(want).items(), weights(got).values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)  # the EMA's arithmetic


def test_a_failing_r1_step_between_replays_is_undone_too(make_cfg, mnist_train, monkeypatch) -> None:
    """compile: graph with lazy R1: the first R1 step after the capture (here step 8's, past the
    compile trial's first steps) fails: rolled back, and the run goes on plain, R1 included."""
    graph_fails_at(monkeypatch, 8, "eager step says no")
    r1 = {**PLAIN, "steps": 10, "r1_gamma": 0.1, "r1_every": 4}
    t, _ = train(make_cfg(**{**r1, "compile": "graph"}), mnist_train)
    plain, _ = train(make_cfg(**r1), mnist_train)
    assert "eager step says no" in t.compile_error and t.graph is None and t.step == 10
    assert_same_weights(plain, t)


def test_graph_mode_with_a_gradient_penalty_is_an_input_error(make_cfg, mnist_train) -> None:
    with pytest.raises(ValidationError, match="compile\n.*compile graph does not support"):
        make_cfg(loss="wgan-gp", compile="graph")
    with pytest.raises(ValidationError, match="compile\n.*R1 penalty .*compile on"):
        make_cfg(r1_gamma=0.1, compile="on")
    with pytest.raises(ValidationError, match="R1 penalty .*compile graph .*allowed: off, auto\\)"):
        make_cfg(r1_gamma=0.1, r1_every=1, compile="graph")  # R1 in every step: nothing to capture
    with pytest.raises(ValidationError, match="compile graph does not support \\(allowed: off, auto\\)"):
        make_cfg(loss="wgan-gp", r1_gamma=0.1, compile="graph")  # and a penalty in every step
    unchecked = make_cfg(r1_gamma=0.0).model_copy(update={"loss": "wgan-gp", "compile": "graph"})
    with pytest.raises(InvalidInput, match="wgan-gp loss .*compile graph"):
        GANTrainer(unchecked, mnist_train)
    assert not resolve(make_cfg(r1_gamma=0.1, r1_every=1), torch.device("cuda"), True).graph  # auto: plain


def test_graph_mode_takes_a_lazy_r1_penalty(make_cfg, mnist_train) -> None:
    """compile: graph with R1 every r1_every > 1 D steps: accepted (Fashion-MNIST's recipe has
    R1), and the plain loop's numbers (on the CPU the graph's body runs from its buffers)."""
    assert make_cfg(dataset="fashion-mnist", compile="graph").compile == "graph"
    r1 = {**PLAIN, "steps": 9, "r1_gamma": 0.1, "r1_every": 4}
    cfg = make_cfg(**{**r1, "compile": "graph"})
    assert resolve(cfg, torch.device("cuda"), True).graph
    graphed, got = train(cfg, mnist_train)
    _, want = train(make_cfg(**r1), mnist_train)
    assert graphed.graph is not None and not graphed.compile_error
    assert sorted(got.read) == sorted(want.read) == list(range(1, 10))
    for step, row in got.read.items():
        assert row == pytest.approx(want.read[step], abs=1e-4, rel=1e-4), step
    _, other = train(make_cfg(**{**r1, "r1_gamma": 0.0, "compile": "graph"}), mnist_train)
    assert other.read[1][0] != got.read[1][0]  # the penalty is in the D loss of R1's steps (0, 4, 8)


@pytest.mark.parametrize(("r1_every", "plans"), [
    (4, ["warm-up"] * 3 + ["capture", "eager", "replay", "replay", "replay", "eager", "replay"]),
    # step 3 has R1: no capture there, one more warm-up, the capture at step 4
    (3, ["warm-up"] * 4 + ["capture", "replay", "eager", "replay", "replay", "eager"]),
])
def test_a_graph_leaves_the_r1_steps_out(make_cfg, mnist_train, r1_every, plans) -> None:
    """On CUDA (its capture switched on here; what is captured, nothing: plan only decides) the
    graph is captured at a step without R1, and each R1 step runs eagerly between replays."""
    t = GANTrainer(make_cfg(steps=10, r1_gamma=0.1, r1_every=r1_every, compile="graph"), mnist_train)
    g = StepGraph(t)
    g.capture = True
    seen = []
    for step in range(10):
        t.step = step
        seen.append(g.plan(t))
        if seen[-1] == "warm-up":
            g.warm += 1
        elif seen[-1] == "capture":
            g.graph = object()  # type: ignore[assignment]  # a stand-in: plan only asks for one
    assert seen == plans
    g.reset()
    t.step = 5
    assert g.plan(t) == "warm-up"  # a fresh capture after a reset, as after loading a checkpoint
    g.capture = False
    assert g.plan(t) == "eager"  # the CPU: every step runs the body from the buffers


def test_lr_decay_reaches_zero_at_the_last_step(make_cfg, mnist_train) -> None:
    seen: list[float] = []

    class Rates(Callback):
        def on_step_end(self, trainer: GANTrainer, logs: dict[str, float]) -> None:
            seen.append(trainer.opt_d.param_groups[0]["lr"])

    cfg = make_cfg(steps=4, lr_decay="linear", lr_d=8e-4)
    GANTrainer(cfg, mnist_train, callbacks=[Rates()]).fit()
    assert seen == pytest.approx([8e-4, 6e-4, 4e-4, 2e-4])  # the rate each step trained at
    seen.clear()
    GANTrainer(cfg.model_copy(update={"lr_decay": "tail", "steps": 8}), mnist_train,
               callbacks=[Rates()]).fit()
    assert seen == pytest.approx([8e-4] * 7 + [4e-4])  # held, then down over the last quarter
    seen.clear()
    GANTrainer(cfg.model_copy(update={"lr_decay": "tail", "lr_tail": 0.5, "steps": 8}), mnist_train,
               callbacks=[Rates()]).fit()
    assert seen == pytest.approx([8e-4] * 5 + [6e-4, 4e-4, 2e-4])  # over the last half


def test_a_graphs_learning_rates_are_tensors_changed_in_place(make_cfg, mnist_train) -> None:
    """Under a CUDA graph the update reads lr from a tensor the schedule fills (a float would be
    baked into the capture); a checkpoint's tensor rates load back as floats on the CPU."""
    t = GANTrainer(make_cfg(steps=4, lr_decay="linear", lr_g=4e-4), mnist_train)
    tensor_lr(t.opt_g)
    lr = t.opt_g.param_groups[0]["lr"]
    t.step = 2
    t.schedule_lr()
    assert t.opt_g.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(2e-4)
    keep_adam_kind(t.opt_g, "torch")
    assert t.opt_g.param_groups[0]["lr"] == pytest.approx(2e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_whole_step_is_captured_once_and_replayed_on_cuda(make_cfg, mnist_train) -> None:
    """compile: graph on CUDA: after the warm-up steps one capture, replays from then on, the
    plain loop's losses to float tolerance, and the EMA generator moved by the replays."""
    _, plain = plain_run(make_cfg, mnist_train, "cuda")
    t, fast = train(make_cfg(steps=50, device="cuda", **{**PLAIN, "compile": "graph"}), mnist_train)
    assert t.graph is not None and t.graph.graph is not None and not t.compile_error
    assert t.opt_g.param_groups[0]["capturable"]
    for step, (d, g) in fast.read.items():
        assert d == pytest.approx(plain.read[step][0], abs=1e-2, rel=1e-2), step
        assert g == pytest.approx(plain.read[step][1], abs=1e-2, rel=1e-2), step
    ema = torch.cat([p.flatten() for p in t.G_ema.parameters()])
    before = ema.clone()
    t.cfg = t.cfg.model_copy(update={"steps": 60})
    while t.advance():
        pass
    assert not torch.equal(before, torch.cat([p.flatten() for p in t.G_ema.parameters()]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_r1_steps_run_between_the_graphs_replays_on_cuda(make_cfg, mnist_train) -> None:
    """compile: graph with lazy R1 on CUDA: captured at a step without R1, every R1 step eager
    between replays, and the plain loop's losses with the same R1 to float tolerance."""
    r1 = {**PLAIN, "steps": 40, "device": "cuda", "r1_gamma": 0.2, "r1_every": 4}
    _, plain = train(make_cfg(**r1), mnist_train)
    t, fast = train(make_cfg(**{**r1, "compile": "graph"}), mnist_train)
    assert t.graph is not None and t.graph.graph is not None and not t.compile_error
    for step, (d, g) in fast.read.items():
        assert d == pytest.approx(plain.read[step][0], abs=1e-2, rel=1e-2), step
        assert g == pytest.approx(plain.read[step][1], abs=1e-2, rel=1e-2), step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_cuda_graphs_give_the_plain_loops_losses(make_cfg, mnist_train) -> None:
    """compile=on on CUDA: torch.compile(mode="reduce-overhead"), CUDA graphs."""
    _, plain = plain_run(make_cfg, mnist_train, "cuda")
    t, fast = train(make_cfg(steps=50, device="cuda", **{**PLAIN, "compile": "on"}), mnist_train)
    assert t.run_G is not t.G
    for step, (d, g) in fast.read.items():
        assert d == pytest.approx(plain.read[step][0], abs=1e-3, rel=1e-3)
        assert g == pytest.approx(plain.read[step][1], abs=1e-3, rel=1e-3)


def test_gpu_report_without_cuda_says_so_and_measures_nothing() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the report would measure")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "train.py"), "--gpu-report"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "no CUDA device" in out.stdout
    assert "images/s" not in out.stdout and "|" not in out.stdout  # no table, no figures


# A CPU step's allocation pattern, in a fresh process (mallopt is the process's): blocks of a few
# MB allocated, touched and freed each round; the minor page faults of 10 rounds after 3. The
# baseline pins glibc's starting mmap threshold (128 KiB), where every block is mapped and
# unmapped: glibc's own default moves that threshold as blocks are freed, and whether this small
# pattern then faults varies from process to process (81,600, 1,024 and 0 faults in three runs).
# The recipe's real step faults thousands of times a step under the defaults (BENCHMARKS.md,
# "Page faults", bench/step_time.py with GANFORGE_MALLOC_KEEP=false).
MALLOC_PROBE = """
import ctypes, resource, sys, torch
from trainer.fastpath import M_MMAP_THRESHOLD, keep_freed_memory
if sys.argv[1] == "keep":
    kept = keep_freed_memory()
else:
    kept = ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 128 << 10) == 1
def step():
    blocks = [torch.ones(1 << 20) for _ in range(8)]  # 8 x 4 MiB
    del blocks
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_kept_freed_memory_stops_the_page_faults_of_each_steps_blocks() -> None:
    def probe(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", MALLOC_PROBE, mode], cwd=ROOT, check=True,
                             capture_output=True, text=True, timeout=120).stdout.split()
        return out[0], int(out[1])

    (kept, faults_kept), (pinned, faults_mapped) = probe("keep"), probe("mapped")
    assert kept == pinned == "True"
    # mapped, the 32 MiB go back to the kernel each round and each round faults them in again
    # (8,192 pages of 4 KiB); kept, the rounds reuse them.
    assert faults_mapped > 10 * 8192 // 2
    assert faults_kept < faults_mapped // 20


@pytest.mark.parametrize("keep", [True, False])
def test_a_training_process_keeps_freed_memory_as_its_settings_say(make_cfg, mnist_train, tmp_path,
                                                                    monkeypatch, keep) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(pipeline, "keep_freed_memory", lambda: calls.append(True) or True)
    t = pipeline.train(make_cfg(steps=1), tmp_path, settings=Settings(malloc_keep=keep),
                       progress_bar=False, data=mnist_train)
    assert t.step == 1
    assert calls == ([True] if keep else [])
