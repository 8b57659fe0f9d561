"""The speed options of per-slice fitting: the label-map stopping rule, the learning-rate
schedule, channels-last tensors, the per-iteration observer, and the warm start."""

from __future__ import annotations

import pytest
import torch
from helpers import regions

from deepgmm.errors import CheckpointError
from deepgmm.fit import stacked
from deepgmm.fit.adamw import adamw_step_
from deepgmm.fit.schedule import LRSchedule
from deepgmm.fit.scheduler import StoppingRule
from deepgmm.fit.single import fit_slices
from deepgmm.fit.stacked import StackedFit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"depth": 2, "base_filters": 4}
QUICK = {"net_config": TINY, "lr": 1e-2, "progress": False, "min_iter": 0}


def fixed(n: int) -> dict:
    """QUICK with exactly ``n`` iterations per slice."""
    return {**QUICK, "min_iter": n, "max_iter": n}


def _labels(*rows: list[int]) -> torch.Tensor:
    """``(N, 1, W)`` label maps from rows of class indices."""
    return torch.tensor(rows, dtype=torch.int64).unsqueeze(1)


def test_label_rule_counts_pixels_changed_within_the_window() -> None:
    # one slice, ROI = the first 4 of 5 pixels (the 5th is outside and changes freely)
    roi = torch.tensor([[[True, True, True, True, False]]])
    rule = StoppingRule(1, tol=1.0, min_iter=0, max_iter=50, describe=str, lr=1.0,
                        stop="labels", label_tol=0.3, label_window=2, roi=roi)
    ids = torch.tensor([0])
    nll = torch.tensor([1.0], dtype=torch.float64)
    seq = [[0, 0, 1, 1, 0], [0, 0, 1, 1, 1],  # it 1: all new; it 2: no ROI pixel changed
           [0, 1, 1, 1, 2],  # it 3: 1 of 4 changed (it 2 counted all of it 1's)
           [0, 1, 1, 1, 3],  # it 4: in the last 2 iterations 1 of 4 changed: 0.25 < 0.3
           ]
    fractions, stops = [], []
    for labels in seq:
        done = rule.update(ids, nll, _labels(labels))
        stops.append(bool(done))
        fractions.append(float(((rule.last_change[0] > rule.n_iter[0] - 2) & roi[0]).sum()
                               / 4))
    assert fractions == [1.0, 1.0, 0.25, 0.25]
    assert stops == [False, False, True, True]


def test_label_rule_needs_window_quiet_iterations_and_min_iter() -> None:
    roi = torch.ones(2, 1, 4, dtype=torch.bool)
    rule = StoppingRule(2, tol=1.0, min_iter=3, max_iter=6, describe=str, lr=1.0,
                        stop="labels", label_tol=1e-3, label_window=2, roi=roi)
    ids = torch.tensor([0, 1])
    nll = torch.zeros(2, dtype=torch.float64)
    out = []
    for t in range(6):
        # slice 0 never changes; slice 1 changes its first pixel every iteration
        out.append(rule.update(ids, nll, _labels([0, 1, 2, 3], [t % 4, 1, 2, 3])).tolist())
    # slice 0: quiet from iteration 2 on, so the window of 2 is clear at 3; more than
    # min_iter = 3 iterations -> stops at 4
    assert [o[0] for o in out] == [False, False, False, True, True, True]
    # slice 1: a quarter of its ROI changes every iteration: only max_iter stops it
    assert [o[1] for o in out] == [False] * 5 + [True]


def test_published_rule_unchanged_by_labels() -> None:
    rule = StoppingRule(1, tol=0.1, min_iter=1, max_iter=9, describe=str, lr=1.0)
    ids = torch.tensor([0])
    assert rule.prev_labels is None
    out = [bool(rule.update(ids, torch.tensor([v], dtype=torch.float64)))
           for v in (1.0, 0.5, 0.45)]
    assert out == [False, False, True]


def test_schedule_values_by_hand() -> None:
    s = LRSchedule(1e-3, warmup=4, half_life=2.0)
    assert [s.at(t) for t in (1, 2, 4)] == pytest.approx([2.5e-4, 5e-4, 1e-3])
    assert [s.at(t) for t in (6, 8)] == pytest.approx([5e-4, 2.5e-4])
    assert LRSchedule(1e-3).constant and LRSchedule(1e-3).at(77) == 1e-3
    assert LRSchedule(1e-3, half_life=1.0).at(3) == pytest.approx(1e-3 / 8)


def test_adamw_with_a_schedule_equals_torch_adamw_per_slice() -> None:
    # two slices at different step counts, each must follow torch.optim.AdamW with the
    # schedule's lr of its own step
    torch.manual_seed(0)
    w = torch.randn(2, 5)
    schedule = LRSchedule(0.1, warmup=3, half_life=1.0)
    state = StackedFit.from_states([{"w": w[0]}, {"w": w[1]}], torch.device("cpu"))
    state.step[1] = 2.0  # slice 1 has taken two steps (with zero moments) already
    refs = [torch.nn.Parameter(w[i].clone()) for i in range(2)]
    opts = [torch.optim.AdamW([p], lr=0.1, weight_decay=0.01) for p in refs]
    opts[1].state[refs[1]] = {"step": torch.tensor(2.0), "exp_avg": torch.zeros(5),
                              "exp_avg_sq": torch.zeros(5)}
    for _ in range(5):
        g = torch.randn(2, 5)
        adamw_step_(state, {"w": g.clone()}, lr=0.1, weight_decay=0.01, lr_at=schedule.at)
        for i in range(2):
            opts[i].param_groups[0]["lr"] = schedule.at(int(state.step[i]))
            refs[i].grad = g[i].clone()
            opts[i].step()
            torch.testing.assert_close(state.params["w"][i], refs[i].detach())
    assert state.step.tolist() == [5.0, 7.0]


@pytest.mark.parametrize("mechanism", ["loop", "vmap", "threads"])
def test_schedule_reaches_every_mechanism(mechanism: str) -> None:
    batch = regions.region_batch(2, n_regions=4, size=16, seed=21)
    const = fit_slices(batch, mechanism=mechanism, **fixed(4))
    same = fit_slices(batch, mechanism=mechanism, lr_warmup=1,
                      **fixed(4))  # warm-up over 1 step = constant
    torch.testing.assert_close(same.responsibilities, const.responsibilities)
    slow = fit_slices(batch, mechanism=mechanism, lr_warmup=100,
                      **fixed(4))
    assert not torch.allclose(slow.responsibilities, const.responsibilities, atol=1e-4)
    if mechanism == "threads":  # the same per-slice arithmetic as the loop, own optimiser
        loop_slow = fit_slices(batch, mechanism="loop", lr_warmup=100, **fixed(4))
        torch.testing.assert_close(slow.responsibilities, loop_slow.responsibilities,
                                   atol=1e-4, rtol=1e-4)


def test_label_rule_stops_a_fit_where_the_labels_settle() -> None:
    batch = regions.region_batch(2, n_regions=2, size=16, seed=22)
    seen: list[tuple[list[int], torch.Tensor]] = []
    res = fit_slices(batch, max_iter=80, stop="labels", label_tol=0.01, label_window=3,
                     observe=lambda ids, nll, logits: seen.append(
                         (ids.tolist(), logits.argmax(dim=1))), **QUICK)
    assert (res.n_iter < 80).all() and (res.n_iter > 3).all(), res.n_iter
    # replaying the observed label maps: the last 3 iterations of each slice changed fewer
    # than 1 % of its ROI pixels, the 3 before the stop did not
    for i in range(2):
        maps = [labels[ids.index(i)] for ids, labels in seen if i in ids]
        assert len(maps) == int(res.n_iter[i])
        roi = batch.roi[i]
        n = int(res.n_iter[i])
        recent = torch.zeros_like(roi)
        for t in range(n - 3, n):
            recent |= maps[t] != maps[t - 1]
        assert float((recent & roi).sum()) < 0.01 * float(roi.sum())
        # the returned responsibilities are those of the stopping iteration
        assert torch.equal(res.responsibilities[i].argmax(dim=0), maps[-1])


def test_channels_last_agrees_with_contiguous() -> None:
    batch = regions.region_batch(2, n_regions=4, size=16, seed=23)
    for mechanism in ("loop", "threads"):
        plain = fit_slices(batch, mechanism=mechanism, **fixed(5))
        nhwc = fit_slices(batch, mechanism=mechanism,
                          channels_last=True, **fixed(5))
        torch.testing.assert_close(nhwc.responsibilities, plain.responsibilities,
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(nhwc.nll, plain.nll, atol=1e-4, rtol=1e-4)


def test_published_rule_is_todays_default() -> None:
    batch = regions.region_batch(2, n_regions=4, size=16, seed=24)
    today = fit_slices(batch, max_iter=60, tol=1e-2, **QUICK)
    published = fit_slices(batch, max_iter=60, tol=1e-2, stop="published", lr_warmup=0,
                           lr_half_life=0.0, channels_last=False, **QUICK)
    assert today.n_iter.tolist() == published.n_iter.tolist()
    assert torch.equal(today.responsibilities, published.responsibilities)


def test_warm_start_loads_a_run_and_refuses_one_that_does_not_fit(phantom_batch,
                                                                   tmp_path) -> None:
    from deepgmm.fit.train import train_network
    from deepgmm.fit.warm import load_warm_start

    run = tmp_path / "run"
    trained = train_network(phantom_batch, model="deepsvg", lam=0.0, epochs=1, min_epochs=1,
                            depth=2, base_filters=4, run_dir=run, progress=False,
                            augment=False, device="cpu")
    warm = load_warm_start(run, phantom_batch, {"depth": 2, "base_filters": 4})
    own = dict(trained.network.named_parameters())
    expected = {k for k, _ in stacked.template({"in_channels": 3, "n_classes": 4, **TINY})
                .named_parameters()}
    assert set(warm.state) == expected and warm.network["base_filters"] == 4
    for k in expected:
        torch.testing.assert_close(warm.state[k], own[k].detach().cpu())
    res = fit_slices(phantom_batch, max_iter=1, min_iter=1, init_state=warm.state,
                     net_config=TINY, progress=False)
    assert res.n_iter.tolist() == [1] * len(phantom_batch)
    with pytest.raises(CheckpointError, match=r"another network: base_filters 4 \(asked for 8"):
        load_warm_start(run, phantom_batch, {"base_filters": 8})
    fewer = regions.subset(phantom_batch, [0])
    fewer.image = fewer.image[:, :2]
    fewer.sequences = fewer.sequences[:2]
    with pytest.raises(CheckpointError, match="sequences"):
        load_warm_start(run, fewer, {})
    cropped = regions.subset(phantom_batch, [0])
    cropped.image = cropped.image[:, :, :32, :32]
    cropped.roi = cropped.roi[:, :32, :32]
    with pytest.raises(CheckpointError, match="crop size"):
        load_warm_start(run, cropped, {})


def test_fit_init_with_a_run_that_does_not_fit_is_one_error_line(phantom_root, tmp_path) -> None:
    from typer.testing import CliRunner

    from deepgmm.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["fit", str(phantom_root), "--out", str(out), "--init",
                                      str(tmp_path / "no-run"), "--crop", "64",
                                      "--no-progress", "--no-figures"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "no-run" in lines[0], lines
    assert not out.exists()
