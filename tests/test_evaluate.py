"""`diffasr eval` and `diffasr bench`: metrics on hand-made cases with known values, manifest errors,
and small end-to-end runs on the real clips of tests/data with the tiny random model (structure only,
never its text)."""

from __future__ import annotations

import json
import math

import pytest
from conftest import DATA, manifest_rows, real_clip

from diffasr.apps.evaluate import load_manifest
from diffasr.cli import main
from diffasr.errors import DataError
from diffasr.metrics import error_rate, metric_for, normalize

# ---------------------------------------------------------------------- metrics


@pytest.mark.parametrize(
    "refs, hyps, lang, expected",
    [
        (["the cat sat down"], ["the cat sat up"], "en", (0.25, "wer")),  # 1 substitution / 4 words
        (["the cat sat down"], ["the cat sat"], "en", (0.25, "wer")),  # 1 deletion
        (["Hello, World!"], ["hello world"], "de", (0.0, "wer")),  # case and punctuation ignored
        (["Mr. Smith is here."], ["mister smith is here"], "en", (0.0, "wer")),  # English normaliser
        (["a b c d", "e f"], ["a b c d", ""], "fr", (2 / 6, "wer")),  # corpus level, not mean of clips
        (["a b", "(noise)"], ["a b", "x"], "es", (0.5, "wer")),  # empty reference: hypothesis counts as insertions
        (["广州市房地产"], ["廣州市房地產"], "zh", (0.0, "cer")),  # traditional vs simplified
        (["换 一首歌"], ["換一首歌。"], "zh", (0.0, "cer")),  # whitespace and punctuation removed
        (["换一首歌"], ["换一首哥"], "zh", (0.25, "cer")),  # 1 substitution / 4 characters
        (["नमस्ते"], ["नमस्त"], "hi", (1 / 6, "cer")),  # the vowel sign is a character of its own
    ],
)
def test_error_rate(refs, hyps, lang, expected):
    rate, metric = error_rate(refs, hyps, lang)
    assert metric == expected[1]
    assert rate == pytest.approx(expected[0])


def test_normalize():
    assert normalize("  Die Werbung,   vermittelt! ", "de") == "die werbung vermittelt"
    assert normalize("廣州市 房地產。", "zh") == "广州市房地产"
    assert normalize("नमस्ते, दुनिया।", "hi") == "नमस्तेदुनिया"  # Devanagari marks kept, whitespace gone
    assert normalize("सन १९४७ में", "hi") == normalize("सन 1947 में", "hi") == "सन1947में"  # one digit form
    assert [metric_for(lang) for lang in ("en", "de", "fr", "es", "zh", "hi")] == ["wer"] * 4 + ["cer"] * 2


def test_metric_override_scores_characters_with_spaces():
    # "hello world" vs "hallo world": 1 character edit over 11 characters (the space counts)
    assert error_rate(["Hello world."], ["hallo world"], "en", metric="cer") == (1 / 11, "cer")
    assert error_rate(["Hello world."], ["hallo world"], "en")[1] == "wer"
    assert error_rate(["你好"], ["你们"], "zh", metric="wer")[1] == "wer"


def test_error_rate_without_reference_words_is_nan():
    assert math.isnan(error_rate(["[laughs]"], ["x"], "en")[0])


# ---------------------------------------------------------------------- manifest


def _manifest(tmp_path, lines: list[str]):
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _row(**kw) -> str:
    return json.dumps({"audio": str(real_clip("de")), "text": "hallo", "lang": "de", **kw})


def test_manifest_parses_relative_paths_subsets_and_blank_lines():
    clips = load_manifest(DATA / "manifest.jsonl")
    assert len(clips) >= 10 and all(c.audio.is_file() for c in clips)
    assert {"en", "zh"} <= {c.lang for c in clips}
    assert any(c.subset for c in clips)


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"audio": "x.wav", "text": "hi", ', r"m\.jsonl:2: not valid JSON"),
        ('["a list"]', r"m\.jsonl:2: expected a JSON object"),
        ('{"text": "hallo", "lang": "de"}', r"m\.jsonl:2: missing or non-string 'audio'"),
        ('{"audio": "a.wav", "lang": "de"}', r"m\.jsonl:2: missing or non-string 'text'"),
        ('{"audio": "nope.wav", "text": "hallo", "lang": "de"}', r"m\.jsonl:2: audio file .*nope\.wav not found"),
        (_row(lang="xx"), r"m\.jsonl:2: unsupported lang 'xx'"),
    ],
)
def test_manifest_errors_name_the_line(tmp_path, bad, message):
    path = _manifest(tmp_path, [_row(), bad, _row()])
    with pytest.raises(DataError, match=message):
        load_manifest(path)


def test_manifest_missing_or_empty(tmp_path):
    with pytest.raises(DataError, match="no such manifest"):
        load_manifest(tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match="no clips"):
        load_manifest(_manifest(tmp_path, ["", "  "]))


def test_cli_reports_bad_manifest_line(tmp_path, capsys):
    path = _manifest(tmp_path, [_row(), _row(), "{oops"])
    assert main(["eval", "--manifest", str(path)]) == 2
    assert "m.jsonl:3: not valid JSON" in capsys.readouterr().err


# ---------------------------------------------------------------------- end to end (tiny random model)


def _real_rows(*langs: str) -> list[str]:
    rows = {r["audio"]: r for r in manifest_rows()}
    out = []
    for lang in langs:
        clip = real_clip(lang)
        row = rows[clip.relative_to(DATA).as_posix()]
        out.append(json.dumps({**row, "audio": str(clip)}, ensure_ascii=False))
    return out


def test_eval_end_to_end(tmp_path, tiny_model_dir, capsys):
    manifest = _manifest(tmp_path, _real_rows("de", "en", "zh"))
    out = tmp_path / "out"
    rc = main(
        [
            "eval",
            "--manifest",
            str(manifest),
            "--model",
            str(tiny_model_dir),
            "--steps",
            "2,4",
            "--json",
            str(out / "eval.json"),
            "--report",
            str(out / "eval.md"),
            "--plot",
            str(out / "eval.png"),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Per language" in printed and "Steps sweep" in printed
    data = json.loads((out / "eval.json").read_text())
    assert [r["name"] for r in data["results"]] == [
        "diffasr diffusion 2 steps",
        "diffasr diffusion 4 steps",
        "diffasr ctc-greedy",
    ]
    for r in data["results"]:
        assert set(r["languages"]) == {"de", "en", "zh", "en:digits"}  # the shortest en clip is a digit
        assert r["languages"]["zh"]["metric"] == "cer" and r["languages"]["en"]["metric"] == "wer"
        for name, row in r["languages"].items():
            assert math.isfinite(row["error_rate"]) and row["error_rate"] >= 0
            assert ":" in name or row["rtf"] > 0  # speed is per language; subsets share their language's batches
        assert r["overall"]["n"] == 3 and r["overall"]["rtf"] > 0
    assert len(data["clips"]) == 3
    assert all(set(c["hyps"]) == {r["name"] for r in data["results"]} for c in data["clips"])
    assert (out / "eval.png").stat().st_size > 1000
    assert "## Steps sweep" in (out / "eval.md").read_text()


def test_eval_baseline_faster_whisper(tmp_path, tiny_model_dir):
    """The baseline is real Whisper-base: on a clear 2 s English clip it should be (nearly) right."""
    clip = real_clip("en", "coqui_LJ001-0002.wav")
    manifest = _manifest(
        tmp_path, [json.dumps({"audio": str(clip), "text": "in being comparatively modern.", "lang": "en"})]
    )
    rc = main(
        [
            "eval",
            "--manifest",
            str(manifest),
            "--model",
            str(tiny_model_dir),
            "--method",
            "ctc-greedy",
            "--baseline",
            "faster-whisper",
            "--json",
            str(tmp_path / "e.json"),
        ]
    )
    assert rc == 0
    data = json.loads((tmp_path / "e.json").read_text())
    base = next(r for r in data["results"] if r["method"] == "faster-whisper")
    assert base["languages"]["en"]["error_rate"] <= 0.25
    assert data["clips"][0]["hyps"]["faster-whisper greedy"]


def test_bench_runs(tmp_path, tiny_model_dir, capsys):
    rc = main(
        [
            "bench",
            "--model",
            str(tiny_model_dir),
            "--clips",
            str(real_clip("en", "coqui_LJ001-0002.wav")),
            "--language",
            "en",
            "--steps",
            "2",
            "--batch-sizes",
            "1,2",
            "--throughput-clips",
            "4",
            "--repeats",
            "1",
            "--no-baseline",
            "--json",
            str(tmp_path / "b.json"),
            "--plot",
            str(tmp_path / "lengths.png"),
        ]
    )
    assert rc == 0
    assert "Per-stage times" in capsys.readouterr().out
    assert (tmp_path / "lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "b.json").read_text())
    assert [s["batch"] for s in data["stages"]] == [1, 8]
    assert all(s["one_step"] > 0 and s["encoder"] > 0 for s in data["stages"])
    assert [t["batch"] for t in data["throughput"]] == [1, 2]
    assert data["rss_mb"]["diffasr_peak_mb"] > 0
    assert len(data["per_clip"]) == 1 and data["per_clip"][0]["tokens"] >= 0  # one distinct clip, cycled


def test_eval_ngram_row_needs_and_uses_an_ngram(tmp_path, tiny_model_dir, capsys):
    """`--method ctc-beam --ngram-weight W` is CTC beam search with the checkpoint's n-gram: one clear
    error without one, a row of its own with one (a tiny n-gram over the tiny model's tokens); a
    flag no listed method reads is an error too."""
    import shutil

    from diffasr.decoding.ngram import NgramLM
    from diffasr.model import DiffusionASR

    manifest = _manifest(tmp_path, _real_rows("en"))
    assert (
        main(
            [
                "eval",
                "--manifest",
                str(manifest),
                "--model",
                str(tiny_model_dir),
                "--method",
                "ctc-beam",
                "--ngram-weight",
                "0.5",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "needs the language's n-gram" in err and "Traceback" not in err
    assert (
        main(
            [
                "eval",
                "--manifest",
                str(manifest),
                "--model",
                str(tiny_model_dir),
                "--method",
                "ctc-greedy,rescore",
                "--steps",
                "2",
            ]
        )
        == 2
    )
    assert "no method of ctc-greedy, rescore reads steps" in capsys.readouterr().err
    model_dir = tmp_path / "with_lm"
    shutil.copytree(tiny_model_dir, model_dir)
    tok = DiffusionASR.load(model_dir).tokenizer
    NgramLM.train(
        [tok.encode(s) for s in ("one two three", "ask not what your country can do")], tok.vocab_size, tok.eos, order=3
    ).save(model_dir / "lm" / "en.npz")
    rc = main(
        [
            "eval",
            "--manifest",
            str(manifest),
            "--model",
            str(model_dir),
            "--method",
            "ctc-greedy,ctc-beam",
            "--ngram-weight",
            "0.5",
            "--length-bonus",
            "1",
            "--json",
            str(tmp_path / "e.json"),
        ]
    )
    assert rc == 0
    data = json.loads((tmp_path / "e.json").read_text())
    assert [r["name"] for r in data["results"]] == ["diffasr ctc-greedy", "diffasr ctc-beam"]
    rows = data["settings"]["rows"]
    assert rows["diffasr ctc-beam"] == {
        "method": "ctc-beam",
        "beam": 16,
        "ngram_weight": 0.5,
        "length_bonus": 1.0,
        "hotwords": [],
        "hotword_boost": 3.0,
        "restrict_script": True,
    }
    assert rows["diffasr ctc-greedy"] == {"method": "ctc-greedy", "restrict_script": True}
