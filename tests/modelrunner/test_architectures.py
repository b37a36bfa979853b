"""The architecture registry: construction, parameter validation, state handling."""

from __future__ import annotations

import pytest
import torch

from modelrunner import architectures
from modelrunner.errors import CheckpointError


def test_registry_names() -> None:
    assert set(architectures.REGISTRY) == {
        "recurrent",
        "tcn",
        "wavenet",
        "pedalnet",
        "sptmod",
        "stn",
        "statematch",
        "armlp",
    }


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("lstm", {}, "unknown architecture 'lstm'"),
        ("tcn", {"channels": 0}, "channels=0"),
        ("tcn", {"channels": 10**9}, "channels=1000000000"),
        ("wavenet", {"dilations": []}, "dilations"),
        ("recurrent", {"unit_type": "Mamba"}, "unit_type"),
        ("recurrent", {"skip": 2}, "skip"),
        ("recurrent", {"hidden_size": True}, "hidden_size"),
        ("pedalnet", {"num_channels": "16"}, "num_channels"),
    ],
)
def test_bad_parameters_refused(name: str, params: dict, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        architectures.build(name, params, 0)


def test_pedalnet_refuses_knobs() -> None:
    with pytest.raises(CheckpointError, match="no knobs"):
        architectures.build("pedalnet", {}, 1)


def test_receptive_fields() -> None:
    tcn = architectures.build("tcn", {"kernel_size": 13, "num_blocks": 4, "dilation_growth": 10}, 1)
    assert architectures.receptive_field(tcn) == 1 + 12 * (1 + 10 + 100 + 1000)
    wn = architectures.build("wavenet", {"kernel_size": 3, "dilations": [1, 2, 4]}, 0)
    assert architectures.receptive_field(wn) == 1 + 2 * 7
    rnn = architectures.build("recurrent", {}, 0)
    assert architectures.receptive_field(rnn) == 1 and architectures.is_stateful(rnn)


def test_conv_state_is_batch_first_and_detached() -> None:
    wn = architectures.build("wavenet", {"channels": 4, "dilations": [1, 2]}, 0)
    x = torch.randn(3, 20, requires_grad=True)
    _, state = wn(x, torch.zeros(3, 0))
    assert [tuple(s.shape) for s in state] == [(3, 4, 2), (3, 4, 4)]
    assert not any(s.requires_grad for s in state)
    with pytest.raises(ValueError, match="state does not belong"):
        wn(torch.randn(2, 5), torch.zeros(2, 0), state)


def test_silence_before_start() -> None:
    """state=None equals an explicit run over zeros first (input-silence convention)."""
    torch.manual_seed(0)
    wn = architectures.build("wavenet", {"channels": 4, "dilations": [1, 2, 4]}, 0).eval()
    x = torch.randn(1, 50)
    with torch.no_grad():
        y, _ = wn(x)
        _, warm = wn(torch.zeros(1, 500))
        y2, _ = wn(x, None, warm)
    assert torch.allclose(y, y2, atol=1e-6)
