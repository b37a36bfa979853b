"""The Python client's parts that need no server: the multipart body it writes by hand, how it
waits for a render, and the Lightning callback's choices (epochs, names, waiting while the
platform renders). tests/integration/test_python_client.py drives both against a live server."""

from __future__ import annotations

import email.parser
import email.policy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from listening_client import Client, RenderFailed, WaitTimeout, encode_multipart
from listening_client.lightning import PushCheckpoints

from modelrunner import architectures, formats

CONFIG = {"architecture": "recurrent", "sample_rate": 44100, "params": {"unit_type": "GRU", "hidden_size": 3}}


def test_multipart_body_parses_as_rfc_7578_form_data():
    """Read back with the standard library's MIME parser (RFC 2046 multipart, RFC 7578 names)."""
    payload = bytes(range(256)) * 3 + b"\r\n--not-a-boundary\r\n"
    body, content_type = encode_multipart(
        {"name": 'riff "A" – é', "is_training": "false"}, {"dry": ('dry "take"\n2.wav', payload)}
    )
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts = list(message.iter_parts())
    assert [p.get_param("name", header="content-disposition") for p in parts] == ["name", "is_training", "dry"]
    assert parts[0].get_payload(decode=True).decode() == 'riff "A" – é'
    assert parts[2].get_param("filename", header="content-disposition") == "dry %22take%22%0A2.wav"
    assert parts[2].get_payload(decode=True) == payload


class ScriptedClient(Client):
    """A client whose answers come from a script, recording every call."""

    def __init__(self, statuses: list[dict[str, Any]] | None = None) -> None:
        super().__init__("http://127.0.0.1:9", "t")
        self.statuses = list(statuses or [])
        self.calls: list[tuple[str, Any]] = []

    def status(self, experiment):
        self.calls.append(("status", experiment))
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def upload_checkpoint(self, experiment, file, *, name="", config=None, sample_rate=None):
        self.calls.append(("upload", Path(file).name))
        return {"id": 7, "name": name}

    def add_condition(self, experiment, checkpoint, label, *, knobs=None, display_name=""):
        self.calls.append(("condition", label))
        return {"id": 9, "label": label, "knobs": dict(knobs or {})}

    def render(self, experiment, *, force=False):
        self.calls.append(("render", experiment))
        return {"status": "rendering"}


def status(state: str, *jobs: tuple[str, str]) -> dict[str, Any]:
    rows = [
        {"id": i, "kind": "model", "status": s, "progress": 0.0, "condition": "c", "excerpt": "x", "attempts": 1}
        | {"error": e}
        for i, (s, e) in enumerate(jobs)
    ]
    return {"status": state, "overall": 0.5, "counts": {}, "jobs": rows}


def test_wait_for_render_names_the_failed_jobs():
    api = ScriptedClient([status("rendering", ("running", "")), status("draft", ("done", ""), ("failed", "NaN out"))])
    with pytest.raises(RenderFailed) as failed:
        api.wait_for_render(3, interval=0)
    assert [j["id"] for j in failed.value.jobs] == [1]
    assert "experiment 3 is draft: c x x: failed (NaN out)" in str(failed.value)
    assert len(api.calls) == 2


def test_wait_for_render_gives_up_after_its_timeout():
    api = ScriptedClient([status("rendering", ("running", ""))])
    with pytest.raises(WaitTimeout, match="still rendering after 0 s"):
        api.wait_for_render(3, timeout=0, interval=0)


def trainer(tmp_path: Path, epoch: int, **metrics: float) -> SimpleNamespace:
    return SimpleNamespace(
        current_epoch=epoch,
        global_step=10 * (epoch + 1),
        callback_metrics={k: torch.tensor(v) for k, v in metrics.items()},
        default_root_dir=str(tmp_path),
        sanity_checking=False,
        is_global_zero=True,
        state=SimpleNamespace(fn="fit"),
    )


def module() -> SimpleNamespace:
    torch.manual_seed(1)
    return SimpleNamespace(net=architectures.build(CONFIG["architecture"], CONFIG["params"], 0))


def test_callback_pushes_chosen_epochs_once_and_waits_while_the_platform_renders(tmp_path):
    api = ScriptedClient([status("rendering", ("running", "")), status("ready", ("done", ""))])
    push = PushCheckpoints(
        api, {"id": 5}, CONFIG, module="net", epochs=[1], label="epoch {epoch} ({val_loss:.2f})", render=True
    )
    pl_module = module()
    push.on_validation_end(trainer(tmp_path, 0, val_loss=0.5), pl_module)
    assert push.pushed == [] and api.calls == []
    push.on_validation_end(trainer(tmp_path, 1, val_loss=0.25), pl_module)
    push.on_validation_end(trainer(tmp_path, 1, val_loss=0.125), pl_module)  # a second validation run
    # Waited for the render under way (status read until ready), then uploaded, added, rendered.
    assert api.calls == [
        ("status", 5),
        ("status", 5),
        ("upload", "epoch1.pt"),
        ("condition", "epoch 1 (0.25)"),
        ("render", 5),
    ]
    assert [p["epoch"] for p in push.pushed] == [1]
    # The file is what the platform reads: the network's weights and the config, epoch in its metadata.
    loaded = formats.load(push.pushed[0]["path"])
    assert (loaded.format, loaded.sample_rate, loaded.architecture) == ("native", 44100, "GRU-3")
    assert loaded.metadata["epoch"] == 1 and loaded.metadata["metrics"] == {"val_loss": 0.25}
    for key, value in pl_module.net.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value), key


def test_callback_skips_the_sanity_check_and_names_unknown_metrics(tmp_path):
    api = ScriptedClient([status("ready")])
    push = PushCheckpoints(api, 5, CONFIG, module="net", label="epoch {epoch} ({val_los:.2f})")
    sanity = trainer(tmp_path, 0, val_loss=0.5)
    sanity.sanity_checking = True
    push.on_validation_end(sanity, module())
    assert api.calls == []
    with pytest.raises(ValueError, match=r"label: .* names 'val_los', .*\(logged: val_loss\)"):
        push.on_validation_end(trainer(tmp_path, 0, val_loss=0.5), module())


def test_callback_refuses_a_config_without_architecture():
    with pytest.raises(ValueError, match="config: the native config needs 'architecture'"):
        PushCheckpoints(ScriptedClient(), 5, {"sample_rate": 48000})
