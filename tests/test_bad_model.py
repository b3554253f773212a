"""Every malformed model directory is one ModelError from `diffasr.load()` and one line + exit 2 from the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import diffasr
from diffasr.cli import main as cli
from diffasr.errors import ModelError


def _edit_config(d: Path, **changes) -> None:
    cfg = json.loads((d / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key)
        else:
            cfg[key] = value
    (d / "config.json").write_text(json.dumps(cfg))


def _other_shapes(d: Path, tiny_tokenizer) -> None:
    """Weights of a model with a wider projector: same names, other shapes."""
    from diffasr.model import DiffusionASR
    from diffasr.models.config import PRESETS

    torch.manual_seed(1)
    proj = dict(PRESETS["tiny"]["projector"], hidden=96)
    other = DiffusionASR.from_preset("tiny", tokenizer=tiny_tokenizer, projector=proj)
    shutil.copy(other.save(d.parent / "other") / "model.safetensors", d / "model.safetensors")


BROKEN = {  # name -> how to break a copy of a good checkpoint, and a word the message must contain
    "empty directory": (lambda d, t: [p.unlink() for p in d.iterdir() if p.is_file()], "config.json"),
    "empty config.json": (lambda d, t: (d / "config.json").write_text(""), "empty"),
    "config.json not JSON": (lambda d, t: (d / "config.json").write_text('{"preset": "tiny",'), "JSON"),
    "config.json a list": (lambda d, t: (d / "config.json").write_text("[]"), "object"),
    "config.json {}": (lambda d, t: (d / "config.json").write_text("{}"), "lacks"),
    "config lacks tokens": (lambda d, t: _edit_config(d, tokens=None), "tokens"),
    "projector a string": (lambda d, t: _edit_config(d, projector="wide"), "projector"),
    "strides not numbers": (lambda d, t: _edit_config(d, projector={"hidden": 64, "strides": ["a"]}), "checkpoint"),
    "lm_config nonsense": (lambda d, t: _edit_config(d, lm_config={"hidden_size": "big"}), "checkpoint"),
    "format from the future": (lambda d, t: _edit_config(d, format_version=99), "format"),
    "no weights": (lambda d, t: (d / "model.safetensors").unlink(), "model.safetensors"),
    "weights garbage": (lambda d, t: (d / "model.safetensors").write_bytes(b"\x00" * 100), "checkpoint"),
    "weights truncated": (
        lambda d, t: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
        "checkpoint",
    ),
    "no tokenizer": (lambda d, t: (d / "tokenizer.json").unlink(), "tokenizer.json"),
    "tokenizer garbage": (lambda d, t: (d / "tokenizer.json").write_text("{nope"), "tokenizer"),
    "wrong tensor shapes": (_other_shapes, "size mismatch"),
}


@pytest.fixture
def broken(request, tmp_path, tiny_model_dir, tiny_tokenizer):
    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    breaker, word = BROKEN[request.param]
    breaker(d, tiny_tokenizer)
    return d, word


@pytest.mark.parametrize("broken", list(BROKEN), indirect=True)
def test_malformed_model_is_a_model_error(broken):
    d, word = broken
    with pytest.raises(ModelError) as e:
        diffasr.load(d)
    message = str(e.value)
    assert str(d) in message and word.lower() in message.lower() and "\n" not in message, message


@pytest.mark.parametrize("broken", ["empty config.json", "wrong tensor shapes", "no weights"], indirect=True)
def test_cli_says_one_line_and_exits_2(broken, en_clip, capsys):
    d, word = broken
    assert cli(["transcribe", "--model", str(d), str(en_clip)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffasr transcribe: error: ") and len(err.splitlines()) == 1 and str(d) in err, err


def test_missing_model_directory(tmp_path):
    with pytest.raises(ModelError, match="no model"):
        diffasr.load(tmp_path / "nowhere")
