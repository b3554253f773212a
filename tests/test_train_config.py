"""The typed training config (training/config.py): inheritance, validation, and that the stage configs,
rewritten as differences, load to what they loaded to before and to what the shipped model records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffasr.errors import ConfigError
from diffasr.training.config import RETIRED, TrainConfig, from_dict, load_config

REPO = Path(__file__).resolve().parents[1]
SHIPPED = json.loads((REPO / "diffasr" / "assets" / "diffasr-small" / "config.json").read_text())
CHAIN = [
    "small.toml",
    "small-stage2.toml",
    "small-stage3.toml",
    "small-stage4.toml",
    "small-stage5.toml",
    "small-stage11.toml",
]


def test_every_config_in_configs_loads():
    names = sorted(p.name for p in (REPO / "configs").glob("*.toml"))
    assert names == sorted(CHAIN + ["gemma-26b.toml"])  # the shipped chain and the published recipe, no probes
    for name in names:
        assert isinstance(load_config(REPO / "configs" / name), TrainConfig)


def test_stage_configs_load_to_what_they_loaded_to_before_the_rewrite():
    """tests/data/configs_before_16.json: each file as loaded by the untyped loader when every stage
    restated everything. Since then: the retired loss keys are gone, [eval] gained decode and ngrams."""
    before = json.loads((REPO / "tests" / "data" / "configs_before_16.json").read_text())
    assert set(before) == set(CHAIN + ["gemma-26b.toml"])
    for name, old in before.items():
        new = load_config(REPO / "configs" / name).to_dict()
        for key in RETIRED:
            section, field = key.split(".")
            assert old[section].pop(field) == RETIRED[key][0]
        assert (new["eval"].pop("decode"), new["eval"].pop("ngrams")) != (None, None)
        assert new == old, name


def test_the_shipped_chain_loads_to_the_configs_its_training_record_holds():
    """diffasr-small's config.json records each stage's config as it ran; the files must still say that,
    except the wall-clock budgets given on the command line then (the rebuild recipe stops by step)."""
    records = SHIPPED["training"]["previous_stages"] + [SHIPPED["training"]]
    assert [Path(r["config"]["out"]).name for r in records] == [
        "small",
        "small2",
        "small3",
        "small4",
        "small5",
        "small11",
    ]

    def same(rec: dict, new: dict, where: str):
        for k, v in rec.items():
            if isinstance(v, dict):
                same(v, new[k], f"{where}{k}.")
            elif f"{where}{k}" in RETIRED:
                assert v == RETIRED[f"{where}{k}"][0]
            elif f"{where}{k}" != "optim.time_budget_min":
                assert new[k] == v, f"{where}{k}"

    for name, rec in zip(CHAIN, records):
        same(rec["config"], load_config(REPO / "configs" / name).to_dict(), "")


def test_the_shipped_training_records_still_parse():
    """The record in a shipped config.json is history: it parses, retired keys and all, and diffasr.load()
    never validates it (it stays a plain dict on ModelConfig.training)."""
    for rec in SHIPPED["training"]["previous_stages"] + [SHIPPED["training"]]:
        cfg = from_dict(rec["config"])
        assert cfg.out == rec["config"]["out"]
    assert SHIPPED["training"]["config"]["loss"]["seed_misspell"] == 0.0


def test_training_evaluates_the_way_the_model_ships():
    cfg = load_config(REPO / "configs" / "small-stage11.toml")
    assert cfg.eval.decode == SHIPPED["decode_defaults"]
    assert (cfg.path(cfg.eval.ngrams) / "en.npz").is_file()


def _write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / "configs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_inheritance_merges_tables_and_replaces_values(tmp_path):
    _write(
        tmp_path,
        "a.toml",
        'out = "runs/a"\n[optim]\nlr = 1e-3\nmax_steps = 10\n[data]\ntrain = ["x.jsonl", "y.jsonl"]\n',
    )
    _write(tmp_path, "b.toml", 'base = "a.toml"\nseed = 3\n[optim]\nlr = 5e-4\n[data]\ntrain = ["z.jsonl"]\n')
    c = _write(tmp_path, "sub/c.toml", 'base = "../b.toml"\n[optim]\nwarmup_steps = 7\n')
    cfg = load_config(c, ["optim.max_steps=12", "init_from=runs/a/checkpoint"])
    assert (cfg.out, cfg.seed, cfg.init_from) == ("runs/a", 3, "runs/a/checkpoint")
    assert (cfg.optim.lr, cfg.optim.max_steps, cfg.optim.warmup_steps) == (5e-4, 12, 7)
    assert cfg.data.train == ("z.jsonl",)  # a list replaces, a table merges
    assert cfg.root == tmp_path and cfg.path("d/m.jsonl") == tmp_path / "d" / "m.jsonl"
    assert cfg.replace(optim={"lr": 1e-4}).optim == cfg.optim.__class__(**{**vars(cfg.optim), "lr": 1e-4})


@pytest.mark.parametrize(
    "text,message",
    [
        ('[optim]\nlr = "fast"\n', "optim.lr = 'fast' is not a valid float"),
        ("[optim]\nlrr = 1.0\n", "unknown key 'optim.lrr'"),
        ('colour = "red"\n', "unknown key 'colour'"),
        ('[loss]\nseed_targets = "nearest"\n', "loss.seed_targets = 'nearest': one of position, aligned, edit"),
        ('[loss]\nschedule = "cosine"\n', "loss.schedule = 'cosine': one of linear"),
        ("[optim]\nbetas = [0.9]\n", "optim.betas = [0.9] is not a valid"),
        ("[loss]\nseed_misspell = 0.3\n", "loss.seed_misspell was removed with stage 6"),
        ('[text]\nlangs = ["xx"]\n', "text.langs"),
        ('[eval]\ndecode = { method = "nope" }\n', "method"),
        ('preset = "huge"\n', "preset = 'huge'"),
        ('base = "self.toml"\n', "loops back"),
        ('base = "missing.toml"\n', "config file not found"),
        ("[optim\n", "c.toml"),
    ],
)
def test_a_bad_config_is_one_clear_error(tmp_path, text, message):
    _write(tmp_path, "self.toml", 'base = "c.toml"\n')
    path = _write(tmp_path, "c.toml", text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(path)


def test_retired_keys_are_accepted_at_their_no_op_value(tmp_path):
    cfg = load_config(_write(tmp_path, "c.toml", "[loss]\nseed_misspell = 0.0\nseed_sample = 0\n"))
    assert "seed_misspell" not in cfg.to_dict()["loss"]


def test_training_and_inference_import_one_way():
    """Inference never imports training; training imports the model and decoding, never transcribe
    or the apps built on it."""
    import subprocess
    import sys

    code = """
import importlib, sys
from pathlib import Path
import diffasr
root = Path(diffasr.__file__).parent
names = [".".join(("diffasr",) + p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
         for p in sorted(root.rglob("*.py"))]  # by file, so walking never imports a package on its own
for n in names:
    if not n.startswith("diffasr.training") and n != "diffasr.__main__":
        importlib.import_module(n)
print(sorted(k for k in sys.modules if k.startswith("diffasr.training")))
for k in [k for k in sys.modules if k.startswith("diffasr.")]:
    del sys.modules[k]
for n in names:
    if n.startswith("diffasr.training"):
        importlib.import_module(n)
print(sorted(k for k in sys.modules if k.startswith("diffasr.") and not k.startswith("diffasr.training")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "[]"
    reached = set(eval(out[1]))
    assert "diffasr.model" in reached
    assert not reached & {
        "diffasr.serving.serve",
        "diffasr.cli",
        "diffasr.apps.batch",
        "diffasr.apps.listen",
        "diffasr.apps.evaluate",
        "diffasr.apps.bench",
        "diffasr.serving.stream_server",
        "diffasr.pipeline.transcribe",
        "diffasr.pipeline.stream",
    }
