"""The slice scheduler: filling places, parking after out-of-memory, stopping, retiring."""

from __future__ import annotations

import pytest
import torch

from deepgmm.errors import FitError
from deepgmm.fit.scheduler import SliceQueue, StoppingRule
from deepgmm.fit.stacked import StackedFit

CPU = torch.device("cpu")


def _fresh(indices: list[int]) -> StackedFit:
    """Networks whose single parameter holds the slice index, to follow them around."""
    return StackedFit.from_states([{"w": torch.tensor([float(i)])} for i in indices], CPU)


def _ids(state: StackedFit) -> list[int]:
    return [int(v) for v in state.params["w"][:, 0]]


def test_fill_park_and_retire_keep_slices_with_their_networks() -> None:
    queue = SliceQueue(7, 4, _fresh, CPU)
    assert _ids(queue.fill()) == queue.active == [0, 1, 2, 3]
    queue.halve(torch.cuda.OutOfMemoryError("simulated"), "one slice")
    assert queue.limit == 2 and queue.active == [0, 1] and _ids(queue.state) == [0, 1]
    assert _ids(queue.fill()) == [0, 1]  # no free place: nothing joins
    # slice 0 stops; the place goes to a parked slice before any waiting one
    queue.retire(torch.tensor([True, False]), queue.state.select(torch.tensor([1])))
    assert _ids(queue.fill()) == queue.active == [1, 2]
    queue.retire(torch.tensor([True, True]), None)
    assert _ids(queue.fill()) == queue.active == [3, 4]  # rest of the parked, then a new one
    queue.retire(torch.tensor([True, True]), None)
    assert _ids(queue.fill()) == [5, 6] and not queue.pending and not queue.parked
    queue.retire(torch.tensor([True, True]), None)
    assert not queue.busy()


def test_one_slice_out_of_memory_is_a_fit_error() -> None:
    queue = SliceQueue(1, 4, _fresh, CPU)
    queue.fill()
    with pytest.raises(FitError, match="one slice of 8 x 8 pixels does not fit in the memory "
                                       "of cpu"):
        queue.halve(torch.cuda.OutOfMemoryError("simulated"), "one slice of 8 x 8 pixels")


def test_stopping_rule_and_divergence() -> None:
    rule = StoppingRule(3, tol=0.1, min_iter=1, max_iter=3, describe=lambda i: f"slice {i}",
                        lr=1e-3)
    ids = torch.tensor([0, 2])
    assert rule.update(ids, torch.tensor([1.0, 1.0], dtype=torch.float64)).tolist() == [
        False, False]  # first iteration: no change yet, and min_iter not passed
    assert rule.update(ids, torch.tensor([1.05, 2.0], dtype=torch.float64)).tolist() == [
        True, False]  # |change| 0.05 < tol after 2 > min_iter iterations
    assert rule.update(torch.tensor([2]), torch.tensor([5.0], dtype=torch.float64)).tolist() \
        == [True]  # max_iter
    assert rule.n_iter.tolist() == [2, 0, 3]
    with pytest.raises(FitError, match=r"slice 1: the NLL became non-finite at iteration 1 "
                                       r"\(lr 0.001\)"):
        rule.update(torch.tensor([1]), torch.tensor([float("nan")], dtype=torch.float64))
