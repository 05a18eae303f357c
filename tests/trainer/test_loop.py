import json

import pytest
import torch

import models
from ganforge.errors import InvalidInput, TrainingCancelled, TrainingDiverged
from models.losses import GANLoss
from trainer.callbacks import Checkpointer, History, SampleGrid
from trainer.checkpoint import load_checkpoint
from trainer.loop import GANTrainer


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


def test_same_seed_same_weights_other_seed_differs(make_cfg, mnist_train) -> None:
    a, b, c = (GANTrainer(make_cfg(steps=3, seed=s), mnist_train) for s in (1, 1, 2))
    for t in (a, b, c):
        t.fit()
    assert same_weights(a.G.state_dict(), b.G.state_dict())
    assert not same_weights(a.G.state_dict(), c.G.state_dict())


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
