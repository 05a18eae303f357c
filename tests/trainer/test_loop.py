import contextlib
import json

import pytest
import torch

import models
import trainer.loop as loop
from ganforge.errors import InvalidInput, TrainingCancelled, TrainingDiverged
from ganforge.spec import ADDED_LATER, TrainConfig
from models.losses import GANLoss
from trainer.callbacks import Checkpointer, History, SampleGrid
from trainer.checkpoint import load_checkpoint
from trainer.loop import GANTrainer, frozen


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("changes", [
    {},  # the reference recipe, small
    {"family": "mlp", "conditional": False, "loss": "wgan-gp", "d_steps": 2},  # dropout + GP RNG
    {"family": "mlp", "loss": "bce", "real_label": 0.9, "d_conditioning": "concat"},
])
def test_resume_is_exact(make_cfg, mnist_train, tmp_path, changes) -> None:
    """N steps, then resume N more from the checkpoint, equals 2N steps in one go."""
    straight = GANTrainer(make_cfg(steps=8, **changes), mnist_train)
    straight.fit()

    first = GANTrainer(make_cfg(steps=4, **changes), mnist_train,
                       callbacks=[Checkpointer(tmp_path, every=100)])
    first.fit()
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["step"] == 4
    del first
    torch.manual_seed(12345)  # whatever happened in between must not matter
    torch.rand(7)
    resumed = GANTrainer.from_checkpoint(ckpt, mnist_train, steps=8)
    resumed.fit()

    assert resumed.step == straight.step == 8
    assert same_weights(resumed.G.state_dict(), straight.G.state_dict())
    assert same_weights(resumed.G_ema.state_dict(), straight.G_ema.state_dict())
    assert same_weights(resumed.D.state_dict(), straight.D.state_dict())


def test_resume_rebuilds_from_the_checkpoint_config(make_cfg, mnist_train, tmp_path) -> None:
    t = GANTrainer(make_cfg(width=12, latent_dim=7, steps=2), mnist_train,
                   callbacks=[Checkpointer(tmp_path, every=1)])
    t.fit()
    resumed = GANTrainer.from_checkpoint(load_checkpoint(tmp_path / "checkpoint.pt"), mnist_train)
    assert resumed.cfg.width == 12 and resumed.cfg.latent_dim == 7 and resumed.step == 2


def test_a_checkpoint_older_than_a_field_resumes_as_it_was_trained(make_cfg, mnist_train, tmp_path,
                                                                   monkeypatch) -> None:
    """A checkpoint written before ``lr_decay``, ``r1_gamma``, ``augment``, ``d_extra_convs``,
    ``ema_bn_batches``, ``d_label_spread``, ``class_loss`` and ``d_joint`` existed trained
    without them: it resumes without them even where today's defaults turn them on
    (``d_extra_convs`` is on by default: 1, ``ema_bn_batches``: 50, ``d_label_spread``: on,
    ``class_loss``: 0.03, ``d_joint``: on)."""
    t = GANTrainer(make_cfg(steps=2, d_extra_convs=0), mnist_train,
                   callbacks=[Checkpointer(tmp_path, every=1)])
    t.fit()
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    for name in ADDED_LATER:
        del ckpt["config"][name]
    del ckpt["architecture"]["d_extra_convs"]
    # fields whose default is the old behaviour: a checkpoint without them has them off
    del ckpt["config"]["lr_tail"]
    del ckpt["architecture"]["d_label_spread"]
    for name, value in (("lr_decay", "linear"), ("r1_gamma", 0.5), ("augment", "translation")):
        monkeypatch.setattr(TrainConfig.model_fields[name], "default", value)
    TrainConfig.model_rebuild(force=True)
    try:
        assert TrainConfig().lr_decay == "linear"  # today's (patched) default
        resumed = GANTrainer.from_checkpoint(ckpt, mnist_train, steps=3)
        assert (resumed.cfg.lr_decay, resumed.cfg.r1_gamma, resumed.cfg.augment) == ("none", 0.0, "none")
        assert resumed.cfg.d_extra_convs == resumed.arch.d_extra_convs == 0 != TrainConfig().d_extra_convs
        assert resumed.cfg.ema_bn_batches == 0 != TrainConfig().ema_bn_batches
        assert not resumed.cfg.d_label_spread and resumed.D.spread is None
        assert resumed.cfg.class_loss == 0.0 != TrainConfig().class_loss
        assert not resumed.cfg.d_joint and TrainConfig().d_joint
        assert resumed.cfg.lr_tail == 0.25
        resumed.fit()  # the D it was trained with: its weights loaded, one more step taken
        assert resumed.step == 3
    finally:
        monkeypatch.undo()
        TrainConfig.model_rebuild(force=True)
    assert TrainConfig().lr_decay == "tail"


def test_d_label_spread_reaches_the_discriminator(make_cfg, mnist_train) -> None:
    t = GANTrainer(make_cfg(), mnist_train)  # on by default (BENCHMARKS.md)
    assert t.arch.d_label_spread and t.D.spread is not None
    assert GANTrainer(make_cfg(d_label_spread=False), mnist_train).D.spread is None
    assert GANTrainer(make_cfg(d_extra_convs=0), mnist_train).D.spread is None


def test_one_d_call_a_d_step_trains_as_two_calls(make_cfg, mnist_train, monkeypatch) -> None:
    """``d_joint`` (the default) gives D a D step's real and fake batches in one call. Without
    spectral norm (its power step runs once a call, so two calls take two) the run is the run of
    two calls to float rounding, the label spread, the class loss and R1 included; with it, D is
    called half as often in the D step. (The mlp family's D draws its dropout masks in another
    order stacked: ``tests/models/test_families.py`` checks its stacking.)"""
    fields = dict(steps=4, spectral_norm=False, amp="off", r1_every=2)
    joint = GANTrainer(make_cfg(**fields), mnist_train)
    calls: list[int] = []
    D = joint.run_D
    monkeypatch.setattr(joint, "run_D", lambda *a, **k: calls.append(a[0].shape[0]) or D(*a, **k))
    joint.fit()
    assert calls == [32, 16] * 4  # the D step's 2 x 16 images, then the G step's 16
    apart = GANTrainer(make_cfg(d_joint=False, **fields), mnist_train)
    apart.fit()
    for net in ("G", "D", "G_ema"):
        a, b = joint.state_dict()[net], apart.state_dict()[net]
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{net}.{k}")


def test_same_seed_same_weights_other_seed_differs(make_cfg, mnist_train) -> None:
    a, b, c = (GANTrainer(make_cfg(steps=3, seed=s), mnist_train) for s in (1, 1, 2))
    for t in (a, b, c):
        t.fit()
    assert same_weights(a.G.state_dict(), b.G.state_dict())
    assert not same_weights(a.G.state_dict(), c.G.state_dict())


@pytest.mark.parametrize(("ema_decay", "reached_at"), [(0.99, 890), (0.995, 1790), (0.999, 8990)])
def test_ema_decay_warms_up_to_the_specs_cap(make_cfg, mnist_train, ema_decay, reached_at) -> None:
    """The EMA's decay follows the warm-up (1 + step) / (10 + step) until it reaches the spec's
    ``ema_decay`` and stays there (the default, 0.995, from step 1790: BENCHMARKS.md)."""
    t = GANTrainer(make_cfg(ema_decay=ema_decay), mnist_train)
    assert t.ema_decay(0) == pytest.approx(0.1)
    assert t.ema_decay(reached_at - 1) == pytest.approx(reached_at / (reached_at + 9))
    assert t.ema_decay(reached_at - 1) < ema_decay
    assert t.ema_decay(reached_at) == ema_decay == t.ema_decay(10 * reached_at)
    assert float(t.ema_decay(torch.tensor(float(reached_at - 1)))) < ema_decay  # the graph's form
    assert float(t.ema_decay(torch.tensor(float(10 * reached_at)))) == pytest.approx(ema_decay)


def test_steps_update_both_nets_and_ema_lags(make_cfg, mnist_train) -> None:
    t = GANTrainer(make_cfg(steps=30, ema_decay=0.99), mnist_train)
    g0 = {k: v.clone() for k, v in t.G.state_dict().items()}
    d0 = {k: v.clone() for k, v in t.D.state_dict().items()}
    t.fit()
    assert not same_weights(g0, t.G.state_dict())
    assert not same_weights(d0, t.D.state_dict())
    w, w_ema, w0 = (sd["project.0.weight"] for sd in (t.G.state_dict(), t.G_ema.state_dict(), g0))
    assert not torch.equal(w, w_ema)
    # the EMA sits between where G started and where it is now
    assert (w_ema - w).norm() < (w0 - w).norm()


def test_recalibrate_bn_gives_the_ema_weights_their_own_statistics() -> None:
    arch = models.ModelConfig(num_classes=10, width=16)
    g, _ = models.build("dcgan", arch)
    bn = g.project[1]
    kwargs = {"latent_dim": arch.latent_dim, "num_classes": 10, "device": torch.device("cpu"),
              "batches": 3, "batch_size": 32, "seed": 5}
    assert loop.recalibrate_bn(g, **kwargs) == 2  # G's two BatchNorms
    assert not g.training and bn.momentum == 0.1  # eval mode and its momentum back
    # the cumulative mean over the same seeded batches, recomputed by hand
    gen = torch.Generator().manual_seed(5)
    means = []
    with torch.no_grad():
        for _ in range(3):
            z = torch.randn(32, arch.latent_dim, generator=gen)
            y = torch.randint(0, 10, (32,), generator=gen)
            means.append(g.project[0](torch.cat([z, g.embed(y)], 1)).mean(0))
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0))
    assert int(bn.num_batches_tracked) == 3
    again = {k: v.clone() for k, v in g.state_dict().items()}
    loop.recalibrate_bn(g, **kwargs)  # seeded: the same statistics again
    assert same_weights(again, g.state_dict())
    loop.recalibrate_bn(g, **{**kwargs, "seed": 6})
    assert not torch.equal(again["project.1.running_mean"], bn.running_mean)
    assert loop.recalibrate_bn(torch.nn.Linear(2, 2), **kwargs) == 0  # no BatchNorm: untouched


def test_mode_seeking_weighs_on_the_g_step_only(make_cfg, mnist_train) -> None:
    plain = GANTrainer(make_cfg(steps=1), mnist_train)
    plain.fit()
    seeking = GANTrainer(make_cfg(steps=1, mode_seeking=1.0), mnist_train)
    seeking.fit()
    assert same_weights(plain.D.state_dict(), seeking.D.state_dict())  # the D step came first
    assert not same_weights(plain.G.state_dict(), seeking.G.state_dict())


def test_class_loss_weighs_on_d_and_g(make_cfg, mnist_train) -> None:
    plain = GANTrainer(make_cfg(steps=1, class_loss=0.0), mnist_train)
    plain.fit()
    ac = GANTrainer(make_cfg(steps=1, class_loss=1.0), mnist_train)
    ac.fit()
    assert not same_weights(plain.D.state_dict(), ac.D.state_dict())  # D names real labels
    assert not same_weights(plain.G.state_dict(), ac.G.state_dict())


def test_class_loss_teaches_d_to_name_real_images(make_cfg, mnist_train) -> None:
    """D's class scores read real digits far better after steps with the class loss than after
    the same steps without it (the projection alone learns labels slowly)."""
    def accuracy(weight: float) -> float:
        t = GANTrainer(make_cfg(steps=40, width=16, batch_size=32, class_loss=weight), mnist_train)
        t.fit()
        x, y = mnist_train.normalized(slice(0, 512)), mnist_train.labels[:512]
        with torch.no_grad():
            scores = t.D.eval()(x, y, classes=True)[:, 1:]
        return (scores.argmax(1) == y).float().mean().item()

    with_it, without = accuracy(1.0), accuracy(0.0)
    assert with_it > 0.6 and with_it > without + 0.2, (with_it, without)


def test_the_last_step_settles_the_emas_batchnorm(make_cfg, mnist_train, tmp_path) -> None:
    settled = GANTrainer(make_cfg(steps=6, ema_bn_batches=4), mnist_train,
                         callbacks=[Checkpointer(tmp_path, every=100)])
    settled.fit()
    copied = GANTrainer(make_cfg(steps=6, ema_bn_batches=0), mnist_train)
    copied.fit()
    mean, weight = "project.1.running_mean", "project.0.weight"
    ema, g = settled.G_ema.state_dict(), settled.G.state_dict()
    assert not torch.equal(ema[mean], g[mean])  # its own statistics, not the live G's
    assert int(ema["project.1.num_batches_tracked"]) == 4
    assert torch.equal(load_checkpoint(tmp_path / "checkpoint.pt")["G_ema"][mean], ema[mean])
    assert torch.equal(copied.G_ema.state_dict()[mean], copied.G.state_dict()[mean])
    assert torch.equal(copied.G_ema.state_dict()[weight], ema[weight])  # only buffers change


@pytest.mark.parametrize("changes", [
    {"amp": "off"},
    {"amp": "bf16", "channels_last": "on", "r1_gamma": 0.5, "r1_every": 2},
    {"family": "mlp", "loss": "wgan-gp", "d_steps": 2},
])
def test_freezing_d_in_the_g_step_changes_no_number(make_cfg, mnist_train, monkeypatch,
                                                      changes) -> None:
    """The G step runs D with its weights frozen (``loop.frozen``): G's gradients are the same
    to the bit as with D's weight gradients computed and thrown away, and D trains on."""
    trained = GANTrainer(make_cfg(steps=5, **changes), mnist_train)
    trained.fit()
    assert all(p.requires_grad for p in trained.D.parameters())  # given back after each G step
    monkeypatch.setattr(loop, "frozen", lambda module, freeze=True: contextlib.nullcontext())
    computed = GANTrainer(make_cfg(steps=5, **changes), mnist_train)
    computed.fit()
    state_a, state_b = trained.state_dict(), computed.state_dict()
    for net in ("G", "D", "G_ema"):
        assert same_weights(state_a[net], state_b[net]), net
    untrained = GANTrainer(make_cfg(steps=5, **changes), mnist_train).state_dict()
    assert not same_weights(state_a["D"], untrained["D"])


def test_frozen_gives_requires_grad_back_after_an_error() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    net[1].bias.requires_grad_(False)  # one that was off stays off
    with pytest.raises(RuntimeError), frozen(net):
        assert not any(p.requires_grad for p in net.parameters())
        raise RuntimeError("in the G step")
    assert [p.requires_grad for p in net.parameters()] == [True, True, True, False]


def test_critic_steps_use_fresh_batches(make_cfg, mnist_train, monkeypatch) -> None:
    t = GANTrainer(make_cfg(steps=2, loss="wgan-gp", d_steps=3), mnist_train)
    seen = []
    real_batch = t.real_batch
    monkeypatch.setattr(t, "real_batch", lambda i: seen.append(i) or real_batch(i))
    t.fit()
    assert seen == [0, 1, 2, 3, 4, 5]


def test_nan_loss_raises_training_diverged(make_cfg, mnist_train, monkeypatch) -> None:
    nan_loss = GANLoss(lambda r, f, real_label=1.0: (r + f).mean() * float("nan"),
                       lambda f: f.mean())
    monkeypatch.setitem(models.LOSSES, "hinge", nan_loss)
    with pytest.raises(TrainingDiverged, match="step 1"):
        GANTrainer(make_cfg(), mnist_train).fit()


def test_cancel_stops_between_steps_and_checkpoints(make_cfg, mnist_train, tmp_path) -> None:
    calls = iter(range(100))
    t = GANTrainer(make_cfg(steps=50), mnist_train, should_stop=lambda: next(calls) >= 3,
                   callbacks=[Checkpointer(tmp_path, every=100)])
    with pytest.raises(TrainingCancelled, match="step 3 of 50"):
        t.fit()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3


def test_cuda_request_without_cuda_is_an_input_error(make_cfg, mnist_train) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InvalidInput, match="device"):
        GANTrainer(make_cfg(device="cuda"), mnist_train)


def test_run_directory_artifacts(make_cfg, mnist_train, tmp_path) -> None:
    from PIL import Image

    cfg = make_cfg(steps=6, sample_every=3)
    grids = SampleGrid(tmp_path, cfg.sample_every)
    GANTrainer(cfg, mnist_train, callbacks=[Checkpointer(tmp_path, 3), grids,
                                            History(tmp_path, cfg.sample_every)]).fit()
    names = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert names == ["step-000000.png", "step-000003.png", "step-000006.png"]
    grid = Image.open(grids.latest)
    assert grid.size == (10 * 30 + 2, 10 * 30 + 2)  # 10x10 tiles of 28 px with 2 px gaps
    records = [json.loads(x) for x in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert {"d_loss", "g_loss", "images_per_s"} <= records[0].keys()
    assert Image.open(tmp_path / "losses.png").size[0] > 100


def test_history_is_cut_back_to_the_checkpoint_on_resume(make_cfg, mnist_train, tmp_path) -> None:
    hist = tmp_path / "history.jsonl"
    hist.write_text("".join(json.dumps({"step": s, "d_loss": 1.0, "g_loss": 1.0}) + "\n"
                            for s in range(1, 10)))
    t = GANTrainer(make_cfg(steps=6), mnist_train, callbacks=[History(tmp_path, 3)])
    t.step = 4  # as if resumed from a checkpoint at step 4 after a crash at step 9
    t.fit()
    steps = [json.loads(x)["step"] for x in hist.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


# --- other sets, the threshold schedule, the realness grid (issue 13) --------------------------
def synthetic(n: int, classes: int, channels: int = 1, size: int = 28, seed: int = 0):
    """A labelled set of random uint8 images with class names (what load_dataset gives)."""
    from trainer.data import Split

    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=gen, dtype=torch.uint8)
    names = tuple("abcdefghijklmnopqrstuvwxyz")[:classes]
    return Split(images, torch.arange(n) % classes, names)


def test_threshold_schedule_alternates(make_cfg, mnist_train, monkeypatch) -> None:
    t = GANTrainer(make_cfg(steps=4, schedule="threshold", conditional=False, g_steps=2), mnist_train)
    order: list[str] = []
    for name, opt in (("D", t.opt_d), ("G", t.opt_g)):
        step = opt.step
        monkeypatch.setattr(opt, "step", lambda *a, _n=name, _s=step, **k: order.append(_n) or _s(*a, **k))
    logs: list[dict] = []
    real_step = t.train_step_threshold
    monkeypatch.setattr(t, "train_step_threshold", lambda: logs.append(real_step()) or logs[-1])
    t.fit()
    assert t.step == 4 and len(logs) == 4
    runs = "".join(order).replace("DG", "D|G").replace("GD", "G|D").split("|")
    assert [r[0] for r in runs] == ["D", "G"] * 4  # a D phase, then a G phase, every round
    for log, d_run, g_run in zip(logs, runs[::2], runs[1::2], strict=True):
        assert log["d_updates"] == len(d_run) >= 1 and log["g_updates"] == len(g_run) >= 2
        # each phase stopped at its threshold (read on the held-out batch) or at the cap
        assert log["d_acc"] >= 0.5 or len(d_run) == 20
        assert log["g_acc"] >= 0.2 or len(g_run) == 20
    assert t.held_out[0].shape == (16, 1, 28, 28) and len(t.images) == 256 - 16  # never trained on


def test_threshold_schedule_resumes_exactly(make_cfg, mnist_train, tmp_path) -> None:
    changes = {"schedule": "threshold", "conditional": True, "d_threshold": 0.6}
    straight = GANTrainer(make_cfg(steps=3, **changes), mnist_train)
    straight.fit()
    first = GANTrainer(make_cfg(steps=1, **changes), mnist_train, callbacks=[Checkpointer(tmp_path, 100)])
    first.fit()
    resumed = GANTrainer.from_checkpoint(load_checkpoint(tmp_path / "checkpoint.pt"), mnist_train, steps=3)
    assert resumed.batches == first.batches >= 1  # where D's batches resume (rounds vary in length)
    resumed.fit()
    assert same_weights(resumed.G.state_dict(), straight.G.state_dict())
    assert same_weights(resumed.D.state_dict(), straight.D.state_dict())


def test_threshold_schedule_needs_a_held_out_batch(make_cfg, mnist_train) -> None:
    with pytest.raises(InvalidInput, match="subset: the threshold schedule holds back a batch"):
        GANTrainer(make_cfg(schedule="threshold", subset=20), mnist_train)


def test_grid_of_26_letters_has_a_column_per_class(make_cfg, tmp_path) -> None:
    from PIL import Image

    t = GANTrainer(make_cfg(steps=1, subset=0), synthetic(104, 26))
    assert t.arch.num_classes == 26 and t.grid_columns == 26
    assert t.fixed_labels is not None and t.fixed_labels[:27].tolist() == [*range(26), 0]
    grids = SampleGrid(tmp_path, 1)
    t.callbacks = [grids]
    t.fit()
    assert Image.open(grids.latest).size == (26 * 30 + 2, 4 * 30 + 2)


@pytest.mark.parametrize(("classes", "rows"), [(3, 3), (10, 10)])
def test_grid_rows_per_class_up_to_ten(make_cfg, classes: int, rows: int) -> None:
    t = GANTrainer(make_cfg(steps=1), synthetic(256, classes))
    assert t.grid_columns == 10 and t.fixed_labels is not None
    assert t.fixed_labels.tolist() == [c for c in range(rows) for _ in range(10)]


def test_colour_32_trains_and_draws_rgb_grids(make_cfg, tmp_path) -> None:
    from PIL import Image

    cfg = make_cfg(steps=2, image_size=32, channels=3, sample_every=2)
    grids = SampleGrid(tmp_path, 2)
    t = GANTrainer(cfg, synthetic(256, 4, channels=3, size=32), callbacks=[grids])
    t.fit()
    assert t.arch.image_shape == (3, 32, 32) and t.sample_fixed().shape == (40, 3, 32, 32)
    grid = Image.open(grids.latest)
    assert grid.mode == "RGB" and grid.size == (10 * 34 + 2, 4 * 34 + 2)


def test_data_and_spec_must_agree(make_cfg) -> None:
    with pytest.raises(InvalidInput, match="image_size: the data is 3x32x32 but the spec asks for 1x28x28"):
        GANTrainer(make_cfg(), synthetic(256, 4, channels=3, size=32))
    with pytest.raises(InvalidInput, match="conditional: .* has 1 class: a conditional model needs"):
        GANTrainer(make_cfg(), synthetic(256, 1))
    assert GANTrainer(make_cfg(conditional=False), synthetic(256, 1)).arch.num_classes == 0


def test_realness_grid_prints_d_scores_above_each_image(make_cfg, mnist_train, tmp_path) -> None:
    import numpy as np
    from PIL import Image

    from trainer.callbacks import SCORE_STRIP, realness

    t = GANTrainer(make_cfg(steps=2, conditional=False), mnist_train)
    t.fit()
    d_before = {k: v.clone() for k, v in t.D.state_dict().items()}
    plain, scored = SampleGrid(tmp_path / "plain", 1), SampleGrid(tmp_path / "scored", 1, realness=True)
    plain.write(t)
    scored.write(t)
    assert same_weights(d_before, t.D.state_dict()) and t.D.training  # drawing changed nothing
    scores = realness(t, t.sample_fixed())
    assert scores.shape == (100,) and ((scores > 0) & (scores < 1)).all()
    a, b = np.asarray(Image.open(plain.latest)), np.asarray(Image.open(scored.latest))
    tile = 28 + SCORE_STRIP
    assert b.shape == (10 * (tile + 2) + 2, 10 * 30 + 2)
    for r in range(10):
        for c in range(10):
            top, left = 2 + r * (tile + 2), 2 + c * 30
            strip = b[top : top + SCORE_STRIP, left : left + 28]
            assert strip.max() > 128  # the score's white text
            image = b[top + SCORE_STRIP : top + tile, left : left + 28]
            assert np.array_equal(image, a[2 + r * 30 : 30 + r * 30, left : left + 28])
