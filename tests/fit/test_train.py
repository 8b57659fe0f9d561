"""Training one network on many slices: loss goes down, schedule, stopping, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deepgmm.data.mu_data import compute_mu_data
from deepgmm.data.slices import make_batch
from deepgmm.errors import CheckpointError, InputError
from deepgmm.fit import train as train_mod
from deepgmm.fit.checkpoint import load_checkpoint
from deepgmm.fit.loss import network_nll
from deepgmm.fit.train import train_network
from deepgmm.types import SliceBatch

SMALL = {"depth": 2, "base_filters": 4, "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def batch(phantom_volumes) -> SliceBatch:  # noqa: ANN001
    """The 12 all-class phantom slices, 64 x 64 crops, with labels."""
    return make_batch(phantom_volumes, crop_size=(64, 64), require_labels=True)


def _subset(batch: SliceBatch, n: int) -> SliceBatch:
    """The first n slices of a batch."""
    return SliceBatch(image=batch.image[:n], roi=batch.roi[:n], labels=batch.labels[:n],
                      case_ids=batch.case_ids[:n], slice_indices=batch.slice_indices[:n],
                      crop_origins=batch.crop_origins[:n], full_shapes=batch.full_shapes[:n],
                      sequences=batch.sequences, spacing=batch.spacing[:n],
                      normalisation=batch.normalisation)


def test_training_reduces_nll_and_follows_schedule(batch: SliceBatch) -> None:
    res = train_network(batch, model="deepg", lam=1.0, epochs=4, min_epochs=4, lr=2e-3,
                        augment=False, seed=0, **SMALL)
    assert res.n_epochs == 4 and not res.converged
    assert len(res.nll_history) == 4
    assert res.nll_history[-1] < res.nll_history[0] - 0.05
    expected = [2e-3 * (1 - e / 4) ** 0.9 for e in range(4)]
    assert res.lr_history == pytest.approx(expected, rel=1e-12)
    # mu_data defaults to the training slices' class means (10 slices, seed 42).
    assert torch.allclose(res.mu_data.cpu(), torch.as_tensor(compute_mu_data(batch)).float())
    # The loss adds lam * penalty >= 0 to the NLL.
    assert all(lo >= nl - 1e-9 for lo, nl in zip(res.loss_history, res.nll_history,
                                                  strict=True))


def test_deepsvg_trains_and_stops_on_tol(batch: SliceBatch) -> None:
    """With a huge tol, training stops as soon as min_epochs are done."""
    res = train_network(_subset(batch, 6), model="deepsvg", lam=0.0, epochs=10, min_epochs=2,
                        tol=1e9, seed=1, **SMALL)
    assert res.n_epochs == 2 and res.converged
    assert all(np.isfinite(res.nll_history))


def test_seeded_runs_are_identical(batch: SliceBatch) -> None:
    batch = _subset(batch, 6)
    kw = {"model": "deepg", "lam": 1.0, "epochs": 1, "min_epochs": 1, "seed": 3, **SMALL}
    a = train_network(batch, **kw)
    b = train_network(batch, **kw)
    c = train_network(batch, **{**kw, "seed": 4})
    assert a.nll_history == b.nll_history
    assert a.nll_history != c.nll_history
    for pa, pb in zip(a.network.parameters(), b.network.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_resume_continues_exactly(batch: SliceBatch, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted after 2 of 3 epochs, then resumed == 3 epochs straight (with augmentation)."""
    batch = _subset(batch, 7)
    kw = {"model": "deepsvg", "lam": 1.0, "epochs": 3, "min_epochs": 3, "seed": 2,
          "batch_size": 4, **SMALL}
    straight = train_network(batch, run_dir=tmp_path / "a", **kw)

    real_save = train_mod.save_checkpoint
    saved: list[int] = []

    def save_then_die(run, *, config, model_state, optimizer_state=None):  # noqa: ANN001, ANN202
        real_save(run, config=config, model_state=model_state,
                  optimizer_state=optimizer_state)
        saved.append(config["epoch"])
        if config["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_network(batch, run_dir=tmp_path / "b", **kw)
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
    assert saved == [1, 2]
    half = load_checkpoint(tmp_path / "b", with_optimizer=True)
    assert half.config["epoch"] == 2 and not half.config["finished"]
    assert half.optimizer_state is not None and half.optimizer_state["state"]

    resumed = train_network(batch, run_dir=tmp_path / "b", resume=True, **kw)
    assert resumed.n_epochs == 3
    assert resumed.nll_history == straight.nll_history
    assert resumed.lr_history == straight.lr_history
    for pa, pb in zip(straight.network.parameters(), resumed.network.parameters(),
                      strict=True):
        assert torch.equal(pa, pb)
    done = json.loads((tmp_path / "b" / "config.json").read_text())
    assert done["epoch"] == 3 and done["finished"]
    assert (tmp_path / "b" / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Resuming a finished run returns it without training further.
    again = train_network(batch, run_dir=tmp_path / "b", resume=True, **kw)
    assert again.n_epochs == 3 and again.nll_history == straight.nll_history


def test_existing_run_and_mismatched_resume_refused(batch: SliceBatch, tmp_path: Path) -> None:
    batch = _subset(batch, 2)
    kw = {"model": "deepg", "lam": 1.0, "epochs": 1, "min_epochs": 1, **SMALL}
    train_network(batch, run_dir=tmp_path, **kw)
    with pytest.raises(InputError, match="already holds a checkpoint"):
        train_network(batch, run_dir=tmp_path, **kw)
    with pytest.raises(CheckpointError, match="lam"):
        train_network(batch, run_dir=tmp_path, resume=True, **{**kw, "lam": 0.5})
    renamed = SliceBatch(**{**batch.__dict__, "sequences": ("C0", "DE", "FLAIR")})
    with pytest.raises(CheckpointError, match="sequences"):
        train_network(renamed, run_dir=tmp_path, resume=True, **kw)


def test_bad_settings_refused(batch: SliceBatch) -> None:
    with pytest.raises(InputError, match="model"):
        train_network(batch, model="deepx", **SMALL)
    with pytest.raises(InputError, match="min_epochs"):
        train_network(batch, epochs=2, min_epochs=3, **SMALL)
    with pytest.raises(InputError, match="lr"):
        train_network(batch, lr=0.0, **SMALL)
    with pytest.raises(InputError, match=r"'penalty' parameter of train_network must be a str "
                       r"among \{'batch', 'slice'\}. Got 'mean'"):
        train_network(batch, penalty="mean", **SMALL)
    with pytest.raises(InputError, match="clip_norm"):
        train_network(batch, clip_norm=0.0, **SMALL)
    with pytest.raises(InputError, match="mu_data must have shape"):
        train_network(batch, mu_data=np.zeros((3, 3)), **SMALL)
    unlabelled = SliceBatch(**{**batch.__dict__, "labels": None})
    with pytest.raises(InputError, match="lam > 0 needs class means"):
        train_network(unlabelled, lam=1.0, **SMALL)
    with pytest.raises(InputError, match="resume needs a run folder"):
        train_network(batch, resume=True, **SMALL)


def _one_step(batch: SliceBatch, penalty: str, clip_norm: float | None,
              lr: float = 0.0) -> tuple[float, torch.nn.Module, torch.nn.Module]:
    """One optimiser step over the whole batch with plain SGD; returns (loss, before, after)."""
    from deepgmm.nets.unet import UNet

    torch.manual_seed(0)
    net = UNet(3, n_classes=4, depth=2, base_filters=4)
    before = UNet(3, n_classes=4, depth=2, base_filters=4)
    before.load_state_dict(net.state_dict())
    mu = torch.as_tensor(compute_mu_data(batch), dtype=torch.float32)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    _, loss_sum = train_mod._run_epoch(
        net, opt, batch.image.float(), batch.roi.bool(), model="deepsvg", lam=1.0, mu=mu,
        batch_size=len(batch), penalty=penalty, clip_norm=clip_norm, generator_seed=0,
        aug_cfg=None, dev=torch.device("cpu"))
    return loss_sum / len(batch), before, net


@pytest.mark.parametrize("penalty", ["batch", "slice"])
def test_penalty_matches_hand_computation(batch: SliceBatch, penalty: str) -> None:
    """batch: ||mean_b mu_b - mu_data||^2 (published); slice: mean_b ||mu_b - mu_data||^2."""
    sub = _subset(batch, 4)
    loss, before, _ = _one_step(sub, penalty, None)
    mu = torch.as_tensor(compute_mu_data(sub), dtype=torch.float64)
    with torch.no_grad():
        nll, _, means = network_nll(before, sub.image.float(), sub.roi.bool(),
                                            "deepsvg")
    means = means.double()
    if penalty == "batch":
        expected = nll.double().mean() + ((means.mean(0) - mu) ** 2).sum()
    else:
        expected = nll.double().mean() + ((means - mu) ** 2).sum(dim=(1, 2)).mean()
    assert loss == pytest.approx(float(expected), rel=1e-5)


def test_batch_penalty_is_the_slice_penalty_minus_the_spread(batch: SliceBatch) -> None:
    """mean_b ||mu_b - m||^2 = ||mean mu - m||^2 + mean_b ||mu_b - mean mu||^2, so the batch
    penalty is smaller for several slices and equal for one."""
    sub = _subset(batch, 4)
    assert _one_step(sub, "batch", None)[0] < _one_step(sub, "slice", None)[0] - 1e-4
    one = _subset(batch, 1)
    assert _one_step(one, "batch", None)[0] == pytest.approx(_one_step(one, "slice", None)[0],
                                                             rel=1e-6)


def test_gradient_norm_is_clipped(batch: SliceBatch) -> None:
    """With SGD at lr 1 the step equals the clipped gradient, whose norm is clip_norm."""
    _, before, after = _one_step(_subset(batch, 2), "batch", 1e-3, lr=1.0)
    with torch.no_grad():
        step = torch.cat([(a - b).flatten()
                          for a, b in zip(after.parameters(), before.parameters(), strict=True)])
    assert float(step.norm()) == pytest.approx(1e-3, rel=1e-4)


def test_bf16_training_reduces_nll_is_recorded_and_resumes_only_in_bf16(
        batch: SliceBatch, tmp_path: Path) -> None:
    kw = {"model": "deepg", "lam": 1.0, "epochs": 4, "min_epochs": 4, "lr": 2e-3,
          "augment": False, "seed": 0, **SMALL}
    half = train_network(batch, precision="bf16", run_dir=tmp_path / "bf16", **kw)
    full = train_network(batch, **kw)
    assert half.nll_history[-1] < half.nll_history[0] - 0.05
    # the same training, to bfloat16's precision: close to float32's, not equal
    assert half.nll_history != full.nll_history
    assert half.nll_history[-1] == pytest.approx(full.nll_history[-1], abs=0.05)
    assert half.config["precision"] == "bf16" and full.config["precision"] == "fp32"
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["precision"] == "bf16"
    with pytest.raises(CheckpointError, match="precision"):
        train_network(batch, run_dir=tmp_path / "bf16", resume=True, **kw)
    with pytest.raises(InputError, match=r"'precision' parameter of train_network must be a "
                       r"str among \{'fp32', 'bf16'\}. Got 'fp16'"):
        train_network(batch, precision="fp16", **kw)


def test_old_config_without_newer_settings_resumes(batch: SliceBatch, tmp_path: Path) -> None:
    """A config.json written before label_weight, labelled_slices and precision existed
    still loads and resumes (they count as their old values); the run records the batch's
    own crop size and normalisation."""
    batch = _subset(batch, 2)
    kw = {"model": "deepg", "lam": 1.0, "epochs": 2, "min_epochs": 2, **SMALL}
    full = train_network(batch, run_dir=tmp_path, **kw)
    assert full.config["normalisation"] == "crop" and full.config["crop_size"] == [64, 64]
    path = tmp_path / "config.json"
    cfg = json.loads(path.read_text())
    for newer in ("label_weight", "labelled_slices", "precision"):
        del cfg[newer]
    cfg.update({"epoch": 1, "finished": False,
                "history": {k: v[:1] for k, v in cfg["history"].items()}})
    path.write_text(json.dumps(cfg))
    resumed = train_network(batch, run_dir=tmp_path, resume=True, **kw)
    assert resumed.n_epochs == 2 and len(resumed.nll_history) == 2
    assert resumed.nll_history[0] == full.nll_history[0]
    assert json.loads(path.read_text())["precision"] == "fp32"
    # the optimiser ran the second epoch at the decayed learning rate
    stored = load_checkpoint(tmp_path, with_optimizer=True).optimizer_state
    assert stored["param_groups"][0]["lr"] == resumed.lr_history[1] < resumed.lr_history[0]
    cfg["files"] = json.loads(path.read_text())["files"]  # the tensors saved by the resume
    path.write_text(json.dumps(cfg))  # the old config again, resumed in another precision
    with pytest.raises(CheckpointError, match="precision: checkpoint 'fp32', now 'bf16'"):
        train_network(batch, run_dir=tmp_path, resume=True, **{**kw, "precision": "bf16"})
