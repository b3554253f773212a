"""The rebuild recipe (configs/recipes/small.toml, training/recipe.py): its plan, as a dry run. Nothing
is trained here; the plan must chain the shipped stages inside its own run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffasr.errors import ConfigError
from diffasr.training import recipe

REPO = Path(__file__).resolve().parents[1]
SHIPPED = json.loads((REPO / "diffasr" / "assets" / "diffasr-small" / "config.json").read_text())


def test_plan_chains_the_shipped_stages_inside_the_run_dir(tmp_path):
    run = str(tmp_path / "rebuild")
    steps = recipe.plan("small", run)
    stages = [s for s in steps if s.config is not None]
    records = SHIPPED["training"]["previous_stages"] + [SHIPPED["training"]]
    assert [Path(s.config.out).name for s in stages] == [Path(r["config"]["out"]).name for r in records]
    prev = None
    for s, rec in zip(stages, records):
        cfg = s.config
        assert Path(cfg.out).parent == Path(run)
        assert cfg.init_from == (f"{prev}/checkpoint" if prev else "")  # never a checkpoint outside the run
        assert (cfg.optim.stop_at or cfg.optim.max_steps) == rec["steps"]  # stops where the shipped run stopped
        assert cfg.optim.time_budget_min == 0  # by step, not by this machine's speed
        assert cfg.seed == rec["config"]["seed"] and cfg.optim.lr == rec["config"]["optim"]["lr"]
        assert not s.done()
        prev = cfg.out
    kinds = [("train" if s.config else "check" if s.check else "run") for s in steps]
    assert kinds.index("check") < kinds.index("train")  # tokenizer before the first stage
    assert kinds[-1] == "run" and "build_lm.py" in steps[-1].commands[0][1]
    assert steps[-1].commands[0][2] == f"{run}/export/small11"  # the n-grams go into the last export
    assert stages[-1].commands[1][-2:] == ("--previous", f"{run}/export/small5")  # the record keeps every stage
    assert (
        json.loads(stages[-1].commands[1][stages[-1].commands[1].index("--decode-defaults") + 1])
        == SHIPPED["decode_defaults"]
    )
    assert all(s.source in ("measured", "estimate") and s.minutes >= 0 for s in steps)


def test_dry_run_prints_every_command_and_the_total(capsys):
    assert recipe.main(["small", "--dry-run"]) == 0
    out = capsys.readouterr().out
    trains = [l for l in out.splitlines() if " train --config " in l]
    assert [l.split("--config ")[1].split()[0] for l in trains] == [
        "configs/small.toml",
        "configs/small-stage2.toml",
        "configs/small-stage3.toml",
        "configs/small-stage4.toml",
        "configs/small-stage5.toml",
        "configs/small-stage11.toml",
    ]
    assert all("--resume" in l for l in trains)
    assert "init_from" not in trains[0] and "runs/rebuild-small/small5/checkpoint" in trains[-1]
    assert out.rstrip().splitlines()[-1].startswith("# total: ")


def test_a_finished_stage_is_skipped(tmp_path):
    steps = recipe.plan("small", str(tmp_path))
    stage1 = next(s for s in steps if s.config is not None)
    ckpt = tmp_path / "small" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "complete.json").write_text(json.dumps({"step": 2000, "files": {}}))
    assert stage1.done()
    (ckpt / "complete.json").write_text(json.dumps({"step": 1999, "files": {}}))
    assert not stage1.done()


def test_unknown_recipe_is_one_clear_error():
    with pytest.raises(ConfigError, match="no recipe 'huge'.*small"):
        recipe.plan("huge")


def test_disjoint_drops_the_dev_rows_whose_sentence_is_in_the_test_set(tmp_path):
    from conftest import DATA, manifest_rows

    rows = [dict(r, audio=str(DATA / r["audio"])) for r in manifest_rows()[:4]]
    dev, test, out = tmp_path / "dev.jsonl", tmp_path / "test.jsonl", tmp_path / "out.jsonl"
    dev.write_text("".join(json.dumps(r) + "\n" for r in rows))
    test.write_text(json.dumps(dict(rows[1], text=rows[1]["text"].upper() + "!")) + "\n")  # same sentence, spoken form
    assert recipe.disjoint(dev, test, out) == 3
    assert [json.loads(l)["text"] for l in out.read_text().splitlines()] == [rows[i]["text"] for i in (0, 2, 3)]


BASE = json.loads((REPO / "diffasr" / "assets" / "diffasr-base" / "config.json").read_text())


def export_of(commands, checkpoint):
    return [c for c in commands if c[1] == "scripts/export_base.py" and c[2] == checkpoint]


def test_the_base_recipe_rebuilds_the_shipped_base_from_the_repository_and_the_corpus_commands(capsys):
    """`recipe base --dry-run` lists a rebuild that starts from files in the repository (scripts, the
    CTC model it names) and the corpus commands, resumes one run stage after stage, stops where the
    shipped run stopped (config.json's provenance record) and exports with the shipped defaults."""
    steps = recipe.plan("base")
    commands = [c for s in steps for c in s.commands]
    scripts = ("scripts/export_base.py", "scripts/concat_clips.py", "scripts/select_rows.py")
    assert all(c[1] in ("-m", *scripts) for c in commands), commands
    assert [s.check for s in steps if s.check] == [f"diffasr/assets/{BASE['ctc_model']}/config.json"]
    assert all((REPO / s.check).is_file() for s in steps if s.check)
    for c in commands:
        if c[1] != "-m":
            assert (REPO / c[1]).is_file(), c[1]
        else:
            modules = ("diffasr", "diffasr.training.train_base", "diffasr.training.teacher")
            assert c[2] in modules and (c[2] != "diffasr" or c[3] == "corpus"), c
        for i, a in enumerate(c):  # every manifest is made by an earlier step or is ../shared's
            if a == "--manifest" and not c[i + 1].startswith("../shared/"):
                made = c[i + 1].rsplit("/", 1)[0]
                assert any(made in " ".join(d) and "--out" in d for d in commands[: commands.index(c)]), made
    trains = [c for c in commands if c[2:3] == ("diffasr.training.train_base",)]
    # stages 1-7 resume one run; the distillation starts a second from the first's export, the Hindi
    # stages a third and a fourth, each from the one before's: each later run once, from its export
    runs = [c[c.index("--out") + 1] for c in trains]
    later = ["runs/rebuild-base/distil", "runs/rebuild-base/hindi", "runs/rebuild-base/hindi2"]
    assert all("--resume" in c for c in trains) and set(runs) == {"runs/rebuild-base/train", *later}
    assert runs[-3:] == later and all(runs.count(r) == 1 for r in later)
    for c, before in zip(trains[-3:], runs[-4:-1]):
        init = c[c.index("--init") + 1]
        assert any(
            d[1] == "scripts/export_base.py" and d[2] == f"{before}/checkpoint" and d[3] == init
            for d in commands[: commands.index(c)]
        ), (init, before)

    def last(c):
        return int(c[c.index("--stop-at") + 1] if "--stop-at" in c else c[c.index("--steps") + 1])

    assert [last(c) for c in trains[:-3]] == sorted(last(c) for c in trains[:-3])
    assert all(export_of(commands, f"{r}/checkpoint") for r in ("runs/rebuild-base/train", *later))
    assert BASE["training"]["recipe"] == "base" and last(trains[-1]) == BASE["training"]["steps"]
    export = commands[-1]
    assert export[1] == "scripts/export_base.py"
    assert json.loads(export[export.index("--decode-defaults") + 1]) == BASE["decode_defaults"]
    assert json.loads(export[export.index("--verifier-by-language") + 1]) == BASE["verifier_by_language"]
    assert recipe.main(["base", "--dry-run"]) == 0
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("# total: ")
