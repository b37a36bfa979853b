"""The Python client (clients/python) and its Lightning callback against a live server with a
real Celery worker: an experiment built, rendered and read through the client, then a tiny
model trained for two epochs that pushes a checkpoint at the end of each and renders it."""

from __future__ import annotations

import ast
import hashlib
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from listening_client import BadRequest, Client, Conflict, NotFound, Unauthorized
from listening_client.lightning import PushCheckpoints, pl

from modelrunner import architectures, formats
from tests.paths import REPO, fixture_path
from webmushra.models import Checkpoint, Stimulus
from webmushra.services import accounts

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    # pytorch-lightning 2.6 calls a torch.utils._pytree check that torch 2.13 deprecates.
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]

CLIENT = REPO / "clients" / "python" / "src" / "listening_client"
#: The tiny network trained here: a GRU with 4 units, native config of the model runner.
CONFIG = {"architecture": "recurrent", "sample_rate": 44100, "params": {"unit_type": "GRU", "hidden_size": 4}}


class Tiny(pl.LightningModule):  # type: ignore[misc]
    """Learns the excerpt's "device" (tests/conftest.py) from its dry input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = architectures.build(CONFIG["architecture"], CONFIG["params"], 0)
        self.mse = torch.nn.MSELoss()

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        out, _ = self.net(x)
        return self.mse(out, y)

    def training_step(self, batch, batch_idx):
        return self.loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def segments(dry: Path, ref: Path, frames: int = 4410) -> torch.utils.data.TensorDataset:
    x, _ = sf.read(dry, dtype="float32")
    y, _ = sf.read(ref, dtype="float32")
    n = len(x) // frames * frames
    return torch.utils.data.TensorDataset(
        torch.from_numpy(x[:n].reshape(-1, frames)), torch.from_numpy(y[:n].reshape(-1, frames))
    )


def test_client_package_imports_the_standard_library_only():
    """The client proper (all but the Lightning module) runs with no third-party package."""
    for path in CLIENT.glob("*.py"):
        if path.name == "lightning.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
        assert names - {"__future__"} <= set(sys.stdlib_module_names), (path.name, names)


def test_client_and_lightning_callback_against_a_live_server(
    live_server, start_worker, excerpt_files, researcher, tmp_path, settings
):
    start_worker()
    token = accounts.api_token_for(user=researcher)
    api = Client(live_server.url, token, timeout=60)

    # Built, rendered and read through the client.
    exp = api.create_experiment("From a training loop", config={"training": False})
    assert [c["kind"] for c in exp["conditions"]] == ["hidden_reference", "anchor35", "anchor70"]
    dry, ref = excerpt_files(seconds=1.0)
    excerpt = api.upload_excerpt(exp, dry, ref, name="riff")
    assert (excerpt["name"], excerpt["frames"], excerpt["sample_rate"]) == ("riff", 44100, 44100)
    baseline = fixture_path("models", "coreaudioml", "ht1_lstm32.json")
    ckpt = api.upload_checkpoint(exp, baseline, name="baseline")
    assert ckpt["sha256"] == hashlib.sha256(baseline.read_bytes()).hexdigest() and ckpt["format"] == "coreaudioml"
    api.add_condition(exp, ckpt, "baseline")
    assert api.render(exp)["status"] == "rendering"
    with pytest.raises(Conflict) as conflict:
        api.add_condition(exp, ckpt, "while rendering")
    assert conflict.value.status == 409 and "render" in conflict.value.message
    seen: list[dict] = []
    status = api.wait_for_render(exp, timeout=300, interval=0.2, progress=seen.append)
    assert status["status"] == "ready" and status["overall"] == 1.0
    assert {j["status"] for j in status["jobs"]} == {"done"} and len(status["jobs"]) == 2
    assert seen[-1] == status and [s["overall"] for s in seen] == sorted(s["overall"] for s in seen)
    assert api.ratings(exp) == {
        "experiment": exp["id"],
        "ratings": [],
        "catch_trials": [],
        "repeat_trials": [],
        "p808_checks": [],
        "comments": [],
    }
    metrics = api.metrics(exp)
    assert {(m["condition"], m["item"]) for m in metrics} == {("baseline", "riff")}
    assert {"esr", "mr_stft"} <= {m["metric"] for m in metrics} and all(m["value"] >= 0 for m in metrics)

    # The API's errors, with its message and status.
    with pytest.raises(BadRequest) as bad:
        api.upload_checkpoint(exp, ("broken.pt", b"not a checkpoint"))
    assert bad.value.status == 400 and bad.value.message.startswith("broken.pt")
    with pytest.raises(Conflict):
        api.cancel_render(exp)
    with pytest.raises(NotFound) as missing:
        api.status(exp["id"] + 1000)
    assert missing.value.status == 404 and str(missing.value).startswith("GET ")
    with pytest.raises(Unauthorized):
        Client(live_server.url, "0" * 40).experiments()

    # A tiny model trained for two epochs pushes a checkpoint after each and renders it.
    data = segments(dry, ref)
    model = Tiny()
    push = PushCheckpoints(
        api,
        exp,
        CONFIG,
        module="net",
        epochs=[0, 1],
        label="epoch {epoch} (val {val_loss:.5f})",
        render=True,
        wait="end",
        directory=tmp_path / "pushed",
    )
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        callbacks=[push],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(
        model,
        torch.utils.data.DataLoader(data, batch_size=5, shuffle=True),
        torch.utils.data.DataLoader(data, batch_size=5),
    )
    assert [p["epoch"] for p in push.pushed] == [0, 1] and push.failed == []
    labels = [p["condition"]["label"] for p in push.pushed]
    assert labels[0].startswith("epoch 0 (val ") and labels[1].startswith("epoch 1 (val ")
    final = push.pushed[-1]["render"]
    assert final["status"] == "ready" and {j["status"] for j in final["jobs"]} == {"done"}
    assert len(final["jobs"]) == 4  # baseline, epoch 0, epoch 1, and the item

    # What arrived: the files as written, recognised, rendered, measured.
    on_server = {c["name"]: c for c in api.checkpoints(exp)}
    for record in push.pushed:
        name = f"epoch{record['epoch']}"
        assert record["path"] == tmp_path / "pushed" / f"{name}.pt"
        sent = on_server[name]
        assert sent["sha256"] == hashlib.sha256(record["path"].read_bytes()).hexdigest()
        assert (sent["format"], sent["architecture"], sent["sample_rate"]) == ("native", "GRU-4", 44100)
        assert sent["summary"]["metadata"]["epoch"] == record["epoch"]
        stimulus = Stimulus.objects.get(condition_id=record["condition"]["id"])
        audio, rate = sf.read(Path(settings.MEDIA_ROOT) / stimulus.file)
        assert rate == 48000 and len(audio) == 48000
    # The last push holds the weights training ended with (read back as the worker reads them).
    stored = Checkpoint.objects.get(pk=on_server["epoch1"]["id"])
    loaded = formats.load(Path(settings.MEDIA_ROOT) / stored.file.name)
    for key, value in model.net.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value), key
    # Two epochs of training moved the weights.
    first = formats.load(push.pushed[0]["path"]).module.state_dict()
    assert any(not torch.equal(first[k], v) for k, v in loaded.module.state_dict().items())
    assert {m["condition"] for m in api.metrics(exp)} == {"baseline", *labels}

    # Opened, no participants yet, closed and deleted.
    opened = api.open(exp)
    assert opened["status"] == "open" and opened["participant_url"].startswith(live_server.url)
    assert api.participants(exp) == []
    with pytest.raises(Conflict):
        api.delete_experiment(exp)
    assert api.close(exp)["status"] == "closed"
    api.delete_experiment(exp)
    assert [e["id"] for e in api.experiments()] == []
