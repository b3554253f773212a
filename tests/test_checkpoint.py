"""Checkpoint saves interrupted at every step (training/checkpoint.py): a complete checkpoint always
survives, `latest` finds the newest one, and the next save does not destroy it; train_base.py saves
through the same protocol and resumes its checkpoints written before it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from diffasr.model import DiffusionASR
from diffasr.training import checkpoint


class Killed(Exception):
    """Stands for SIGKILL at one point of the save."""


def _load(d: Path) -> int:
    """Load a checkpoint the way `--resume` does; returns its step."""
    DiffusionASR.load(d)
    return torch.load(d / "trainer_state.pt", weights_only=False)["state"]["step"]


@pytest.fixture
def interrupt(monkeypatch):
    """Counts the save's file operations; `interrupt.at = k` makes the k-th one fail half-done."""
    real = {"replace": os.replace, "rmtree": shutil.rmtree, "torch_save": torch.save, "fsync": os.fsync}

    class Interrupt:
        at, calls, watch = None, 0, None  # watch: a run directory that must hold a complete checkpoint throughout

        def hit(self) -> bool:
            if self.watch is not None:  # checked before every operation: the state a kill here would leave
                assert checkpoint.latest(self.watch) is not None, (
                    f"no complete checkpoint before operation {self.calls}"
                )
            self.calls += 1
            return self.calls - 1 == self.at

    it = Interrupt()

    def replace(a, b, *args, **kwargs):
        if it.hit():
            raise Killed(f"replace {a} -> {b}")
        return real["replace"](a, b, *args, **kwargs)

    def rmtree(path, *args, **kwargs):
        if it.hit():  # half-deleted: one file gone
            files = [p for p in Path(path).rglob("*") if p.is_file()]
            if files:
                files[0].unlink()
            raise Killed(f"rmtree {path}")
        return real["rmtree"](path, *args, **kwargs)

    def torch_save(obj, f, *args, **kwargs):
        if it.hit():  # a truncated file
            Path(f).write_bytes(b"\x80\x02trunc")
            raise Killed(f"torch.save {f}")
        return real["torch_save"](obj, f, *args, **kwargs)

    def fsync(fd):
        if it.hit():
            raise Killed("fsync")
        return real["fsync"](fd)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    monkeypatch.setattr(torch, "save", torch_save)
    monkeypatch.setattr(os, "fsync", fsync)
    return it


def _save(out, model, step, opt):
    return checkpoint.save(out, model, {"step": step}, opt, {"steps": step})


def test_a_kill_at_any_step_of_the_save_keeps_a_complete_checkpoint(tmp_path, tiny_model, interrupt):
    opt = torch.optim.SGD([p for p in tiny_model.parameters() if p.requires_grad], lr=0.1)
    interrupt.calls = 0
    _save(tmp_path / "count", tiny_model, 1, opt)
    _save(tmp_path / "count", tiny_model, 2, opt)  # the second save has every step (swap, delete)
    first = interrupt.calls
    interrupt.calls = 0
    _save(tmp_path / "count2", tiny_model, 1, opt)
    n_ops = first - interrupt.calls  # operations of a save over an existing checkpoint
    assert n_ops >= 8
    for k in range(n_ops):
        out = tmp_path / f"run{k}"
        interrupt.at, interrupt.watch = None, None
        _save(out, tiny_model, 1, opt)
        interrupt.calls, interrupt.at, interrupt.watch = 0, k, out
        with pytest.raises(Killed):
            _save(out, tiny_model, 2, opt)
        interrupt.at = None
        found = checkpoint.latest(out)
        assert found is not None, f"kill at operation {k}: no complete checkpoint left in {sorted(os.listdir(out))}"
        assert _load(found) in (1, 2)
        # the kill may leave the new checkpoint complete but not yet swapped in: it is then the one found
        complete = [checkpoint.step_of(out / n) for n in checkpoint.NAMES if (out / n).is_dir()]
        assert checkpoint.step_of(found) == max(s for s in complete if s is not None)
        # a second kill in the next save must not lose it either, and a clean save then wins
        interrupt.calls, interrupt.at = 0, k
        try:
            _save(out, tiny_model, 3, opt)
        except Killed:
            pass
        interrupt.at = None
        assert (found := checkpoint.latest(out)) is not None and _load(found) in (1, 2, 3)
        assert _load(_save(out, tiny_model, 4, opt)) == 4
        assert checkpoint.latest(out) == out / "checkpoint"
        assert sorted(os.listdir(out)) == ["checkpoint"]
        interrupt.watch = None


def test_latest_ignores_incomplete_and_accepts_old_format(tmp_path, tiny_model):
    opt = torch.optim.SGD([p for p in tiny_model.parameters() if p.requires_grad], lr=0.1)
    out = tmp_path / "run"
    _save(out, tiny_model, 5, opt)
    assert checkpoint.latest(out) == out / "checkpoint" and checkpoint.step_of(out / "checkpoint") == 5
    shutil.copytree(out / "checkpoint", out / "checkpoint.tmp")
    (out / "checkpoint.tmp" / "complete.json").write_text('{"step": 9, "files": {}}')  # files do not match
    assert checkpoint.latest(out) == out / "checkpoint"
    with open(out / "checkpoint" / "model.safetensors", "ab") as f:  # a file changed after marking: not complete
        f.write(b"x")
    assert checkpoint.latest(out) is None
    shutil.rmtree(out / "checkpoint.tmp")
    (out / "checkpoint" / "complete.json").unlink()  # a checkpoint written before markers existed
    assert checkpoint.latest(out) == out / "checkpoint"
    assert checkpoint.latest(tmp_path / "nothing") is None


def test_resume_finds_a_checkpoint_stranded_mid_swap(tmp_path, monkeypatch):
    """The issue's case: killed between the two renames, only checkpoint.old is left; `train --resume`
    must start from it, not from step 0."""
    from diffasr.training import train as train_mod

    seen = {}
    monkeypatch.setattr(
        train_mod.DiffusionASR,
        "load",
        classmethod(lambda cls, d, **kw: seen.setdefault("dir", d) and (_ for _ in ()).throw(Killed("loaded"))),
    )
    out = tmp_path / "run"
    (out / "checkpoint.old").mkdir(parents=True)
    cfg = train_mod.load_config(_minimal_config(tmp_path, out))
    (out / "checkpoint.old" / "complete.json").write_text('{"step": 3, "files": {}}')
    with pytest.raises(Killed):
        train_mod.train(cfg, resume=True)
    assert Path(seen["dir"]) == out / "checkpoint.old"


def _minimal_config(tmp_path: Path, out: Path) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'preset = "tiny"\nout = "{out}"\n')
    return cfg


def _base_run(tmp_path: Path, tokenizer: str = "repaired") -> tuple[Path, Path]:
    """A two-clip English manifest (absolute audio paths) and a run directory holding a train_base
    checkpoint in the format written before checkpoint.py (no marker; config.json written last)."""
    import json

    from conftest import DATA, manifest_rows

    from diffasr.models.whisper_denoiser import DenoiserConfig, WhisperDenoiser

    rows = sorted((r for r in manifest_rows() if r["lang"] == "en"), key=lambda r: r["duration_s"])[:2]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(dict(r, audio=str(DATA / r["audio"]))) + "\n" for r in rows))
    torch.manual_seed(0)
    model = WhisperDenoiser(DenoiserConfig(rank=4, tokenizer=tokenizer))
    model.vocab = {
        "en": torch.tensor(sorted({t for r in rows for t in model.tokens.encode(r["text"], "en")} | {model.tokens.eot}))
    }
    old = tmp_path / "run" / "checkpoint"
    model.save_trained(old)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)
    torch.save({"opt": opt.state_dict(), "step": 7}, old / "optimizer.pt")
    (old / "config.json").write_text(
        json.dumps({"denoiser": model.settings(), "step": 7, "manifests": [str(manifest)]})
    )
    return manifest, tmp_path / "run"


def test_train_base_resumes_its_old_checkpoints_and_saves_through_the_protocol(tmp_path, capsys):
    import json

    from diffasr.training import train_base

    manifest, run = _base_run(tmp_path)
    assert checkpoint.latest(run) == run / "checkpoint" and checkpoint.step_of(run / "checkpoint") == 7
    old_weights = (run / "checkpoint" / "denoiser.safetensors").read_bytes()
    assert (
        train_base.main(
            [
                "--manifest",
                str(manifest),
                "--out",
                str(run),
                "--cache",
                str(tmp_path / "feats"),
                "--resume",
                "--steps",
                "8",
                "--batch",
                "2",
                "--threads",
                "1",
                "--rank",
                "4",
            ]
        )
        == 0
    )
    assert "starting at step 7" in capsys.readouterr().out  # resumed, not restarted
    ckpt = checkpoint.latest(run)
    assert ckpt == run / "checkpoint" and checkpoint.step_of(ckpt) == 8
    assert json.loads((ckpt / "complete.json").read_text())["step"] == 8
    assert json.loads((ckpt / "config.json").read_text())["step"] == 8
    assert {p.name for p in ckpt.iterdir()} == {
        "config.json",
        "denoiser.safetensors",
        "vocab.safetensors",
        "optimizer.pt",
        "complete.json",
    }
    assert (ckpt / "denoiser.safetensors").read_bytes() != old_weights  # one step was taken
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "log.jsonl"]


def test_train_base_resuming_a_run_made_with_the_shipped_tokenizer_repairs_it(tmp_path, capsys):
    """A run trained on Whisper's tokenizer.json as shipped (" the" = " " + "the") resumes on the
    repaired one: its vocabularies are rebuilt (they now hold 264, " the") and its settings say so."""
    import json

    from safetensors.torch import load_file

    from diffasr.training import train_base

    manifest, run = _base_run(tmp_path, tokenizer="as-shipped")
    assert 264 not in load_file(str(run / "checkpoint" / "vocab.safetensors"))["en"].tolist()
    text = tmp_path / "text"  # the sentence files the vocabularies are rebuilt from, independent of ../shared
    text.mkdir()
    (text / "en.txt").write_text("The cat sat on the mat.\n", encoding="utf-8")
    args = ["--manifest", str(manifest), "--out", str(run), "--cache", str(tmp_path / "feats"), "--resume"]
    args += ["--text-dir", str(text)]
    assert train_base.main(args + ["--steps", "8", "--batch", "2", "--threads", "1", "--rank", "4"]) == 0
    assert "tokenizer as-shipped -> repaired: the vocabularies are rebuilt" in capsys.readouterr().out
    ckpt = checkpoint.latest(run)
    assert json.loads((ckpt / "config.json").read_text())["denoiser"]["tokenizer"] == "repaired"
    assert 264 in load_file(str(ckpt / "vocab.safetensors"))["en"].tolist()


def test_train_base_fine_tunes_the_shipped_model_from_its_directory(tmp_path, capsys):
    """--init takes a model directory's settings (rank 16, not --rank's default here), weights and
    vocabularies; a shipped model trained on the tokenizer as shipped is moved to the repaired one;
    the run starts at step 0 and records what it fine-tunes."""
    import json

    from safetensors.torch import load_file

    from diffasr.training import train_base

    shipped = Path(__file__).parents[1] / "diffasr" / "assets" / "diffasr-base"
    manifest, run = _base_run(tmp_path)
    out = tmp_path / "tuned"
    args = ["--manifest", str(manifest), "--out", str(out), "--cache", str(tmp_path / "feats"), "--init", str(shipped)]
    assert train_base.main(args + ["--steps", "1", "--batch", "2", "--threads", "1", "--rank", "4"]) == 0
    printed = capsys.readouterr().out
    shipped_cfg = json.loads((shipped / "config.json").read_text())
    moved = shipped_cfg["denoiser"]["tokenizer"] == "as-shipped"  # a model on the old tokenizer is moved
    assert ("tokenizer as-shipped -> repaired" in printed) == moved and "starting at step 0" in printed
    ckpt = checkpoint.latest(out)
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["step"] == 1 and cfg["denoiser"]["rank"] == 16 and cfg["denoiser"]["tokenizer"] == "repaired"
    assert cfg["init"] == {"model": str(shipped), "step": shipped_cfg["training"]["steps"]}
    before, after = load_file(str(shipped / "denoiser.safetensors")), load_file(str(ckpt / "denoiser.safetensors"))
    assert before.keys() == after.keys()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved and max((before[k].float() - after[k].float()).abs().max().item() for k in before) < 0.05  # one step


def test_train_base_init_must_be_a_base_model_directory(tmp_path, capsys):
    from diffasr.training import train_base

    manifest, run = _base_run(tmp_path)  # a training checkpoint, not an exported model
    args = ["--manifest", str(manifest), "--out", str(tmp_path / "o"), "--cache", str(tmp_path / "feats")]
    assert train_base.main(args + ["--init", str(run / "checkpoint"), "--steps", "1"]) == 2
    assert train_base.main(args + ["--init", str(tmp_path / "nowhere"), "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error: --init ") for e in err)


def test_latest_finds_train_bases_old_checkpoint_left_mid_swap(tmp_path):
    """The old train_base swap renamed checkpoint -> checkpoint-old before checkpoint-new -> checkpoint."""
    import json

    out = tmp_path / "run"
    (out / "checkpoint-old").mkdir(parents=True)
    (out / "checkpoint-old" / "optimizer.pt").write_bytes(b"")
    (out / "checkpoint-old" / "config.json").write_text(json.dumps({"step": 12}))
    (out / "checkpoint-new").mkdir()  # no config.json: never complete
    assert checkpoint.latest(out) == out / "checkpoint-old" and checkpoint.step_of(out / "checkpoint-old") == 12
