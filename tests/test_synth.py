"""Fast checks of the synthetic corpus generator: labels, sentence splits, augmentation, end to end."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from diffasr.cli import main
from diffasr.errors import DataError
from diffasr.training.corpus import augment as aug
from diffasr.training.corpus import engines, numbers, synth
from diffasr.training.corpus.text import LANGS, TEXT_DIR, load_sentences, normalize_label

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
needs_text = pytest.mark.skipif(not (TEXT_DIR / "en.txt").exists(), reason=f"no sentence files in {TEXT_DIR}")


@pytest.mark.parametrize(
    "text,lang,want",
    [
        ("  Hello   world. ", "en", "Hello world."),
        ("I have 3 cats.", "en", None),
        ("मेरे पास ३ किताबें हैं।", "hi", None),  # Devanagari digit
        ("Ich habe ３ Katzen.", "de", None),  # full-width digit
        ("Visit www.example.com today.", "en", None),
        ("Salt & pepper, please.", "en", None),
        ("Es cuesta mucho €, amigo.", "es", None),
        ("Bonjour", "fr", None),  # one word: too short
        (" ".join(["mot"] * 31), "fr", None),  # too many words
        ("ＡＢＣ sind Buchstaben.", "de", "ABC sind Buchstaben."),  # NFKC
        ("我們在電腦前學習漢語。", "zh", "我们在电脑前学习汉语。"),  # traditional -> simplified
        ("你好", "zh", None),  # too short for zh
    ],
)
def test_normalize_label(text, lang, want):
    assert normalize_label(text, lang) == want


@needs_text
def test_load_sentences_deterministic_and_disjoint():
    tr, te = load_sentences("hi", "train"), load_sentences("hi", "test")
    assert len(te) == 300 and len(tr) > 1000
    assert load_sentences("hi", "test") == te and load_sentences("hi", "train")[:50] == tr[:50]
    assert not {s.casefold() for s in tr} & {s.casefold() for s in te}
    assert all(normalize_label(s, "hi") == s for s in te)


def test_load_sentences_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_sentences("en", "train", text_dir=tmp_path)
    with pytest.raises(DataError, match="unknown language"):
        load_sentences("xx", "train")
    with pytest.raises(DataError, match="unknown split"):
        load_sentences("en", "dev")
    (tmp_path / "de.txt").write_text("".join(f"Satz Nummer {w} hier.\n" for w in "abcdefghij"))
    assert len(load_sentences("de", "train", tmp_path, n_test=3)) == 7


@pytest.mark.parametrize("seed", range(12))
def test_augment_shape_dtype_peak(seed):
    rng = np.random.default_rng(seed)
    x = (0.5 * np.sin(np.arange(24000) * 0.05) * rng.uniform(0.01, 3)).astype(np.float32)
    y, desc = aug.augment_described(x, np.random.default_rng(seed))
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert np.abs(y).max() <= 1.0 and desc
    z = aug.augment(x, np.random.default_rng(seed))
    assert np.array_equal(y, z)  # deterministic given the generator


def test_augment_silence_and_effects():
    rng = np.random.default_rng(0)
    silence = np.zeros(1600, np.float32)
    assert np.isfinite(aug.augment(silence, rng)).all()
    x = rng.standard_normal(16000).astype(np.float32) * 0.1
    for f in (aug.add_noise, aug.reverb, aug.band_limit, aug.mulaw, aug.random_gain):
        y = f(x, rng)
        assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert abs(20 * np.log10(np.sqrt(np.mean(aug.normalize_loudness(x, -23) ** 2))) + 23) < 0.01


def _manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _check_corpus(out, langs, min_s=synth.MIN_S):
    rows = _manifest(out)
    assert rows and [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert {r["lang"] for r in rows} == set(langs)
    for r in rows:
        assert set(r) >= {"id", "audio", "text", "lang", "engine", "voice", "duration_s", "split"}
        info = sf.info(out / r["audio"])
        assert info.samplerate == 16000 and info.channels == 1 and info.format == "FLAC"
        assert abs(info.frames / 16000 - r["duration_s"]) < 2e-3
        assert min_s <= r["duration_s"] <= synth.MAX_S
    return rows


@needs_espeak
@needs_text
def test_end_to_end_espeak_resume_and_determinism(tmp_path, capsys):
    out = tmp_path / "c"
    args = [
        "corpus",
        "synth",
        "--langs",
        "en,zh",
        "--hours",
        "0.003",
        "--out",
        str(out),
        "--workers",
        "1",
        "--engines",
        "espeak",
    ]
    assert main(args) == 0
    rows = _check_corpus(out, ["en", "zh"])
    assert "audio-s per CPU-s" in capsys.readouterr().out
    assert json.loads((out / "corpus.json").read_text())["seed"] == 0
    assert not (out / "manifest.partial.jsonl").exists()
    # resume: the same command adds nothing and leaves the manifest unchanged
    assert main(args) == 0
    assert _manifest(out) == rows
    # same command elsewhere, in 2 worker processes: the same utterances (order of work does not matter)
    out2 = tmp_path / "c2"
    assert main(args[:-5] + [str(out2), "--workers", "2", "--engines", "espeak"]) == 0
    # (2 workers keep more clips in flight, so they may overshoot the target by a few more clips)
    keys = ("text", "engine", "voice", "augment", "duration_s")
    other = {r["id"]: {k: r[k] for k in keys} for r in _manifest(out2)}
    assert all(other.get(r["id"]) == {k: r[k] for k in keys} for r in rows)
    # a different seed with the same --out is refused
    assert main(args + ["--seed", "1"]) == 2


@needs_espeak
@needs_text
def test_interrupted_partial_manifest_is_recovered(tmp_path):
    out = tmp_path / "c"
    args = [
        "corpus",
        "synth",
        "--langs",
        "de",
        "--hours",
        "0.002",
        "--out",
        str(out),
        "--workers",
        "1",
        "--engines",
        "espeak",
        "--split",
        "test",
    ]
    assert main(args) == 0
    rows = _check_corpus(out, ["de"])
    assert all(r["split"] == "test" and r["augment"] == "clean" for r in rows)
    assert {r["text"] for r in rows} <= set(load_sentences("de", "test"))
    # simulate a crash: the last record only in the partial file, plus a torn line
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]))
    (out / "manifest.partial.jsonl").write_text(json.dumps(rows[-1]) + "\n" + '{"id": "de_te')
    assert main(args) == 0
    assert _manifest(out) == rows


@needs_espeak
@needs_text
def test_short_utterances(tmp_path):
    """--kind short: 1-4 word clips (numbers, digit strings, fragments) with their own ids; a sentence
    corpus directory refuses to be resumed as a short one."""
    out = tmp_path / "s"
    args = [
        "corpus",
        "synth",
        "--langs",
        "en,es",
        "--hours",
        "0.003",
        "--out",
        str(out),
        "--workers",
        "1",
        "--engines",
        "espeak",
        "--kind",
        "short",
    ]
    assert main(args) == 0
    rows = _check_corpus(out, ["en", "es"], min_s=synth.MIN_S_SHORT)
    assert all("_s" in r["id"] and 1 <= len(r["text"].split()) <= 4 for r in rows)
    assert min(r["duration_s"] for r in rows) < 1.5
    assert json.loads((out / "corpus.json").read_text())["kind"] == "short"
    assert main(args[:-2]) == 2  # same --out, other kind


@pytest.mark.parametrize("lang", ["en", "de", "fr", "es", "hi", "zh"])
def test_number_words(lang):
    from diffasr.training.corpus.text import number_words

    words = [number_words(n, lang) for n in range(11)]
    assert len(set(words)) == 11 and all(w and not any(c.isdigit() for c in w) for w in words)
    assert number_words(7, "en") == "seven" and number_words(23, "zh") == "二十三"


def test_bad_arguments(tmp_path, capsys):
    base = ["corpus", "synth", "--out", str(tmp_path / "x")]
    assert main(base + ["--langs", "en,xx"]) == 2
    assert main(base + ["--hours", "-1"]) == 2
    assert main(base + ["--engines", "nope"]) == 2
    assert main(base + ["--langs", "fr", "--engines", "espeak"]) == 2  # no selected engine speaks fr
    err = capsys.readouterr().err
    assert "unknown language" in err and "no selected engine speaks fr" in err


@needs_text
@pytest.mark.skipif(not engines.KokoroEngine().available(), reason="kokoro not installed")
def test_kokoro_one_utterance(tmp_path):
    out = tmp_path / "k"
    assert (
        main(
            [
                "corpus",
                "synth",
                "--langs",
                "es",
                "--hours",
                "0.0002",
                "--out",
                str(out),
                "--workers",
                "1",
                "--engines",
                "kokoro",
                "--no-augment",
            ]
        )
        == 0
    )
    rows = _check_corpus(out, ["es"])
    assert len(rows) == 1 and rows[0]["engine"] == "kokoro" and rows[0]["augment"] == "clean"


def test_weights_cover_all_languages():
    assert set(synth.WEIGHTS) == set(LANGS)
    assert all(w.get("kokoro", 0) >= 0.65 for w in synth.WEIGHTS.values())


def test_perturb_makes_deterministic_resumable_copies(tmp_path):
    import json

    import soundfile as sf

    from diffasr.cli import main as cli

    src = tmp_path / "src"
    (src / "audio").mkdir(parents=True)
    t = np.arange(32000) / 16000
    sf.write(src / "audio" / "a.flac", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    (src / "manifest.jsonl").write_text(
        json.dumps({"id": "a", "audio": "audio/a.flac", "text": "hi there", "lang": "en", "duration_s": 2.0}) + "\n"
    )
    args = ["corpus", "perturb", "--manifest", str(src / "manifest.jsonl"), "--copies", "3", "--workers", "1"]
    assert cli(args + ["--out", str(tmp_path / "p1")]) == 0
    assert cli(args + ["--out", str(tmp_path / "p1")]) == 0  # resume: nothing new
    assert cli(args + ["--out", str(tmp_path / "p2")]) == 0
    rows = [json.loads(l) for l in (tmp_path / "p1" / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a_p0", "a_p1", "a_p2"] and all(r["text"] == "hi there" for r in rows)
    for r in rows:
        x, sr = sf.read(tmp_path / "p1" / r["audio"])
        assert sr == 16000 and abs(len(x) / sr - r["duration_s"]) < 0.01 and 1.7 < r["duration_s"] < 2.3
        assert (tmp_path / "p1" / r["audio"]).read_bytes() == (tmp_path / "p2" / r["audio"]).read_bytes()


def test_perturb_names_rows_without_ids_and_rejects_incomplete_ones(tmp_path, capsys):
    """real_train's rows carry no id: a copy is named by the audio file's stem. A row without text
    is one error line, not a traceback."""
    import json

    import soundfile as sf

    from diffasr.cli import main as cli

    (tmp_path / "zh").mkdir()
    sf.write(tmp_path / "zh" / "clip7.wav", np.zeros(8000, np.float32) + 0.01, 16000)
    good = {"audio": "zh/clip7.wav", "text": "你好世界", "lang": "zh"}
    (tmp_path / "m.jsonl").write_text(json.dumps(good, ensure_ascii=False) + "\n")
    args = ["corpus", "perturb", "--manifest", str(tmp_path / "m.jsonl"), "--copies", "1", "--workers", "1"]
    assert cli(args + ["--out", str(tmp_path / "p")]) == 0
    (row,) = [json.loads(l) for l in (tmp_path / "p" / "manifest.jsonl").read_text().splitlines()]
    assert row["id"] == "clip7_p0" and row["source_id"] == "clip7" and row["text"] == "你好世界"
    (tmp_path / "bad.jsonl").write_text(json.dumps({"audio": "zh/clip7.wav", "lang": "zh"}) + "\n")
    bad = ["corpus", "perturb", "--manifest", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "q")]
    capsys.readouterr()
    assert cli(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks text" in err[0]


@pytest.mark.parametrize(
    "n,want",
    [
        (0, "शून्य"),
        (47, "सैंतालीस"),
        (100, "एक सौ"),
        (305, "तीन सौ पांच"),
        (2024, "दो हजार चौबीस"),
        (150000, "एक लाख पचास हजार"),
        (12345678, "एक करोड़ तेईस लाख पैंतालीस हजार छह सौ अठहत्तर"),
    ],
)
def test_hindi_numbers_as_spoken(n, want):
    """Indian grouping (crore, lakh, hazar, sau) and the own word for each of 0-99."""
    assert numbers.hindi_number(n) == want


def test_hindi_years_and_number_utterances():
    """Years before 2000 are read in hundreds; number utterances are Devanagari words only, no digits."""
    assert numbers.hindi_year(1947) == "उन्नीस सौ सैंतालीस"
    assert numbers.hindi_year(2001) == "दो हजार एक"
    rng = np.random.default_rng(0)
    sents = ["भारत ने आज एक नया उपग्रह अंतरिक्ष में भेजा है।"]
    texts = [numbers.number_utterance("hi", sents, rng) for _ in range(200)]
    assert not any(ch.isdigit() for t in texts for ch in t)
    assert all(normalize_label(t, "hi") == t for t in texts)
    assert any("बजे" in t for t in texts) and any(" में" in t for t in texts)
    with pytest.raises(ValueError):
        numbers.number_utterance("en", sents, rng)
    with pytest.raises(ValueError):
        numbers.hindi_number(10**9)


def test_number_kind_is_hindi_only():
    assert main(["corpus", "synth", "--langs", "en", "--hours", "0.01", "--out", "/tmp/x", "--kind", "numbers"]) == 2
