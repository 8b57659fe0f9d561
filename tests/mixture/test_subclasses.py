"""Several components per class: the classes' parameters are those of their component
mixture, which equals the M-step on the summed class responsibilities."""

from __future__ import annotations

import math

import pytest
import torch

from deepgmm.mixture.likelihood import m_step
from deepgmm.mixture.subclasses import (
    class_log_probabilities,
    class_moments,
    class_params,
    class_probabilities,
    class_weights,
)


def test_hand_computed_moments():
    # one class of two components: weights 0.1, 0.3; means 0, 2; variances 1, 3
    weights = torch.tensor([[0.1, 0.3]], dtype=torch.float64)
    means = torch.tensor([[[0.0], [2.0]]], dtype=torch.float64)
    variances = torch.tensor([[[1.0], [3.0]]], dtype=torch.float64)
    mean, var = class_moments(weights, means, variances, 2)
    # shares 1/4, 3/4: mean 1.5; E[x^2] = (1 + 0)/4 + 3 (3 + 4)/4 = 5.5; var = 5.5 - 2.25
    assert float(mean) == pytest.approx(1.5)
    assert float(var) == pytest.approx(3.25)
    assert float(class_weights(weights, 2)) == pytest.approx(0.4)
    # a class without mass: the plain average of its components
    mean0, _ = class_moments(torch.zeros(1, 2, dtype=torch.float64), means, variances, 2)
    assert float(mean0) == pytest.approx(1.0)


def test_class_params_equal_the_m_step_of_the_summed_responsibilities():
    gen = torch.Generator().manual_seed(0)
    b, k, j, m, h, w = 2, 4, 2, 3, 10, 12
    image = torch.randn(b, m, h, w, generator=gen, dtype=torch.float64)
    roi = torch.rand(b, h, w, generator=gen) > 0.2
    resp = torch.softmax(torch.randn(b, k * j, h, w, generator=gen, dtype=torch.float64), 1)
    grouped = class_params(m_step(resp, image, roi), j)
    direct = m_step(class_probabilities(resp, j), image, roi)
    torch.testing.assert_close(grouped.weights, direct.weights)
    torch.testing.assert_close(grouped.means, direct.means)
    torch.testing.assert_close(grouped.covariances, direct.covariances)
    # components c = 2k, 2k + 1 form class k
    torch.testing.assert_close(class_probabilities(resp, j)[:, 1], resp[:, 2] + resp[:, 3])


def test_one_component_per_class_is_the_identity():
    gen = torch.Generator().manual_seed(1)
    image = torch.randn(1, 2, 6, 6, generator=gen)
    roi = torch.ones(1, 6, 6, dtype=torch.bool)
    params = m_step(torch.softmax(torch.randn(1, 4, 6, 6, generator=gen), 1), image, roi)
    assert class_params(params, 1) is params
    with pytest.raises(ValueError, match="cannot be split"):
        class_probabilities(torch.ones(1, 5, 2, 2), 2)


def test_class_log_probabilities_are_the_logs_of_the_class_sums():
    gen = torch.Generator().manual_seed(2)
    log_resp = torch.log_softmax(torch.randn(2, 8, 5, 6, generator=gen, dtype=torch.float64), 1)
    grouped = class_log_probabilities(log_resp, 2)
    assert grouped.shape == (2, 4, 5, 6)
    torch.testing.assert_close(grouped, class_probabilities(log_resp.exp(), 2).log())
    # class 3 = components 6 and 7; a very negative component does not underflow the sum
    torch.testing.assert_close(grouped[:, 3], torch.logaddexp(log_resp[:, 6], log_resp[:, 7]))
    deep = torch.tensor([[[-2000.0], [-2001.0]]], dtype=torch.float64)  # (1, 2, 1)
    assert float(class_log_probabilities(deep, 2)) == pytest.approx(-2000.0 + math.log1p(
        math.exp(-1.0)))
    assert class_log_probabilities(log_resp, 1) is log_resp
