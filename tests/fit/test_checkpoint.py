"""Checkpoints: exact round trip, journalled writes, and refusal of bad or foreign files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from deepgmm.errors import CheckpointError
from deepgmm.fit import checkpoint as ck
from deepgmm.nets.unet import UNet

SEQ = ["C0", "DE", "T2"]


def _net(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(3, n_classes=4, depth=2, base_filters=4)


def _config(net: UNet, epoch: int = 1, **kw: object) -> dict:
    cfg = {"network": net.config, "n_classes": 4,
           "class_names": ["blood", "myocardium", "edema", "scar"], "sequences": SEQ,
           "normalisation": "crop", "crop_size": [16, 16],
           "mu_data": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]],
           "train_patients": ["1", "2"], "model": "deepg", "lam": 1.0, "epoch": epoch,
           "seed": 0}
    cfg.update(kw)
    return cfg


def _optimised(net: UNet) -> torch.optim.AdamW:
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-3)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
    return opt


def test_round_trip_weights_optimizer_and_predictions(tmp_path: Path) -> None:
    net = _net()
    opt = _optimised(net)
    ck.save_checkpoint(tmp_path / "run", config=_config(net, epoch=2),
                       model_state=net.state_dict(), optimizer_state=opt.state_dict())
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "config.json", "model.safetensors", "optimizer.safetensors"]
    loaded = ck.load_checkpoint(tmp_path / "run", sequences=SEQ, n_classes=4,
                                with_optimizer=True)
    assert loaded.config["epoch"] == 2
    net2 = ck.build_network(loaded)
    for (name, a), (name2, b) in zip(net.state_dict().items(), net2.state_dict().items(),
                                     strict=True):
        assert name == name2 and torch.equal(a, b)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), net2.eval()(x))
    # Optimiser state restored exactly: one more step on both gives identical weights.
    opt2 = torch.optim.AdamW(net2.parameters(), lr=1e-3, weight_decay=1e-3)
    opt2.load_state_dict(loaded.optimizer_state)
    for model, optim in ((net, opt), (net2, opt2)):
        optim.zero_grad()
        model.train()(x).square().mean().backward()
        optim.step()
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_other_sequences_or_k_refused(tmp_path: Path) -> None:
    net = _net()
    ck.save_checkpoint(tmp_path, config=_config(net), model_state=net.state_dict())
    with pytest.raises(CheckpointError, match="sequences C0, DE, T2"):
        ck.load_checkpoint(tmp_path, sequences=["C0", "T2", "DE"])
    with pytest.raises(CheckpointError, match="sequences"):
        ck.load_checkpoint(tmp_path, sequences=["C0", "DE"])
    with pytest.raises(CheckpointError, match="K = 4"):
        ck.load_checkpoint(tmp_path, n_classes=3)
    with pytest.raises(CheckpointError, match="no optimiser state"):
        ck.load_checkpoint(tmp_path, with_optimizer=True)


def test_weights_of_another_k_refused(tmp_path: Path) -> None:
    """A config that claims K = 3 over weights with 4 output channels is caught."""
    net = _net()
    other = UNet(3, n_classes=3, depth=2, base_filters=4)
    cfg = _config(other, n_classes=3, class_names=["a", "b", "c"], mu_data=None)
    ck.save_checkpoint(tmp_path, config=cfg, model_state=net.state_dict())
    with pytest.raises(CheckpointError, match="do not fit"):
        ck.build_network(ck.load_checkpoint(tmp_path))


def test_corrupt_files_refused(tmp_path: Path) -> None:
    net = _net()
    ck.save_checkpoint(tmp_path, config=_config(net), model_state=net.state_dict())
    model = tmp_path / ck.MODEL_FILE
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or was written halfway"):
        ck.load_checkpoint(tmp_path)
    # Garbage whose hash matches the config: the safetensors reader refuses it.
    model.write_bytes(b"not a safetensors file at all")
    cfg = json.loads((tmp_path / ck.CONFIG_FILE).read_text())
    cfg["files"][ck.MODEL_FILE] = ck._sha256(model)
    (tmp_path / ck.CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        ck.load_checkpoint(tmp_path)
    (tmp_path / ck.CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ck.load_checkpoint(tmp_path)


def test_missing_config_keys_and_tensors_refused(tmp_path: Path) -> None:
    net = _net()
    ck.save_checkpoint(tmp_path, config=_config(net), model_state=net.state_dict())
    cfg = json.loads((tmp_path / ck.CONFIG_FILE).read_text())
    del cfg["sequences"], cfg["mu_data"]
    (tmp_path / ck.CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="lacks the key.*sequences"):
        ck.load_checkpoint(tmp_path)
    state = dict(net.state_dict())
    state.pop("head.weight")
    ck.save_checkpoint(tmp_path / "b", config=_config(net), model_state=state)
    with pytest.raises(CheckpointError, match="head.weight"):
        ck.build_network(ck.load_checkpoint(tmp_path / "b"))


def test_missing_run_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        ck.load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        ck.load_checkpoint(tmp_path)


def test_interrupted_write_never_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    """A save that dies halfway leaves the previous checkpoint current."""
    import safetensors.torch

    net = _net()
    opt = _optimised(net)
    ck.save_checkpoint(tmp_path, config=_config(net, epoch=1), model_state=net.state_dict(),
                       optimizer_state=opt.state_dict())
    real = safetensors.torch.save_file
    calls = []

    def dying_save(tensors, filename, metadata=None):  # noqa: ANN001, ANN202
        calls.append(filename)
        if len(calls) == 2:  # the optimiser file: die after writing half of it
            real(tensors, filename, metadata=metadata)
            Path(filename).write_bytes(Path(filename).read_bytes()[:100])
            raise KeyboardInterrupt
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", dying_save)
    net2 = _net(seed=5)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path, config=_config(net2, epoch=2),
                           model_state=net2.state_dict(), optimizer_state=opt.state_dict())
    loaded = ck.load_checkpoint(tmp_path, with_optimizer=True)
    assert loaded.config["epoch"] == 1
    assert torch.equal(loaded.model_state["head.weight"], net.state_dict()["head.weight"])
    assert (tmp_path / ck.STAGING_DIR).exists()
    ck.recover_checkpoint(tmp_path)  # incomplete staging is discarded
    assert not (tmp_path / ck.STAGING_DIR).exists()
    assert ck.load_checkpoint(tmp_path).config["epoch"] == 1


def test_crash_while_moving_is_rolled_forward(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    net = _net()
    ck.save_checkpoint(tmp_path, config=_config(net, epoch=1), model_state=net.state_dict())
    real_replace = ck.os.replace
    moved = []

    def dying_replace(src, dst):  # noqa: ANN001, ANN202
        if Path(dst).parent == tmp_path and moved:
            raise KeyboardInterrupt  # die after the first file was moved into place
        real_replace(src, dst)
        if Path(dst).parent == tmp_path:
            moved.append(dst)

    monkeypatch.setattr(ck.os, "replace", dying_replace)
    net2 = _net(seed=5)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path, config=_config(net2, epoch=2),
                           model_state=net2.state_dict())
    monkeypatch.setattr(ck.os, "replace", real_replace)
    # New weights beside the old config: loading refuses the mixture...
    with pytest.raises(CheckpointError, match="written halfway"):
        ck.load_checkpoint(tmp_path)
    # ...and recovery finishes the complete staged checkpoint.
    ck.recover_checkpoint(tmp_path)
    loaded = ck.load_checkpoint(tmp_path)
    assert loaded.config["epoch"] == 2
    assert torch.equal(loaded.model_state["head.weight"], net2.state_dict()["head.weight"])


def test_required_and_resume_keys_come_from_run_config() -> None:
    names = [f.name for f in dataclasses.fields(ck.RunConfig)]
    assert set(ck.REQUIRED_KEYS) == {
        "format_version", "network", "n_classes", "class_names", "sequences",
        "normalisation", "crop_size", "mu_data", "train_patients", "model", "lam", "epoch",
        "files"}
    assert set(ck.RESUME_KEYS) == {
        "model", "lam", "epochs", "min_epochs", "batch_size", "lr", "weight_decay", "tol",
        "seed", "augment", "network", "train_patients", "n_slices", "crop_size", "sequences",
        "mu_data", "penalty", "clip_norm", "label_weight", "labelled_slices", "precision",
        "context", "potts_weight", "consistency_weight", "prior", "lam_var", "lam_weights",
        "class_prior", "components_per_class"}
    assert set(ck.RESUME_KEYS) <= set(names)
    assert set(ck.REQUIRED_KEYS) - set(names) == {"format_version", "epoch", "files"}


@pytest.mark.parametrize("key", ["normalisation", "crop_size", "model", "epoch"])
def test_a_missing_required_key_is_named(tmp_path: Path, key: str) -> None:
    net = _net()
    ck.save_checkpoint(tmp_path, config=_config(net), model_state=net.state_dict())
    cfg = json.loads((tmp_path / ck.CONFIG_FILE).read_text())
    del cfg[key]
    (tmp_path / ck.CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=f"lacks the key\\(s\\) {key}$"):
        ck.read_config(tmp_path)


def _run_config(**kw: object) -> ck.RunConfig:
    values = {f.name: None for f in dataclasses.fields(ck.RunConfig)}
    values.update({"model": "deepg", "lam": 1.0, "label_weight": 0.0, "precision": "fp32",
                   "labelled_slices": [], "crop_size": [16, 16], "sequences": SEQ})
    values.update(kw)
    return ck.RunConfig(**values)  # type: ignore[arg-type]


def test_resume_differences_use_old_values_for_newer_settings() -> None:
    current = _run_config()
    stored = current.to_json()
    assert current.resume_differences(stored) == []
    for newer in ("label_weight", "precision", "labelled_slices"):  # written before they existed
        del stored[newer]
    assert current.resume_differences(stored) == []
    assert _run_config(precision="bf16").resume_differences(stored) == [
        "precision: checkpoint 'fp32', now 'bf16'"]
    # tuples and lists compare equal; a stored key without an old value is None
    assert _run_config(crop_size=(16, 16)).resume_differences(stored) == []
    del stored["lam"]
    assert current.resume_differences(stored) == ["lam: checkpoint None, now 1.0"]
    with pytest.raises(CheckpointError, match=r"cannot resume 'run'.*lam: checkpoint None"):
        ck.check_resumable(stored, current, "run")
