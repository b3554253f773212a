"""`diffasr batch` on a local Ray: 2 actors, real clips plus a broken file, Parquet out, re-run skips.

One Ray job for the module, run through the CLI in a subprocess (Ray's start is the slow part,
~15 s); the tiny random model makes the text meaningless, so the checks are on rows, columns,
errors and the skip logic. The re-run and argument checks never start Ray.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import real_clip


@pytest.fixture(scope="module")
def batch_run(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    inp = d / "in" / "sub"
    inp.mkdir(parents=True)
    clips = [real_clip("en", "jfk.flac"), real_clip("de"), real_clip("en")]  # 11 s, 3.5 s, 0.2 s
    for c in clips:
        shutil.copy(c, inp / c.name)
    (inp / "broken.wav").write_bytes(b"RIFF\x00\x00garbage" * 50)
    (inp / "notes.txt").write_text("not audio")  # ignored: not an audio extension
    # A manifest mixing a pyarrow URI (read as bytes through pyarrow's filesystem), local paths, a
    # given language and none (identified): both ways of reading and two language groups per batch.
    manifest = d / "in" / "manifest.jsonl"
    lines = [{"audio": f"file://{inp / 'jfk.flac'}", "lang": "en"}]
    lines += [{"audio": f"sub/{p.name}"} for p in sorted(inp.iterdir()) if p.name not in ("jfk.flac", "notes.txt")]
    manifest.write_text("".join(json.dumps(l) + "\n" for l in lines))
    out = d / "out.parquet"
    # Through the CLI, in its own process: a Ray driver leaves threads behind (gRPC) even after
    # ray.shutdown(), and a later test that forks the pytest process could then deadlock in the child.
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffasr",
            "batch",
            str(manifest),
            "--output",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--actors",
            "2",
            "--batch-size",
            "2",
            "--steps",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    return d, inp, out, r


def test_batch_two_actors_real_clips_and_a_broken_file(batch_run):
    d, inp, out, r = batch_run
    assert r.returncode == 1, r.stderr  # 1: some file failed (the job itself finished)
    assert r.stderr.strip().splitlines()[-1].startswith(f"{out}: 4 transcribed (1 failed), 0 already done, 4 files")
    t = pq.read_table(out)
    assert t.column_names == [
        "path",
        "text",
        "language",
        "language_probability",
        "duration",
        "segments",
        "timings",
        "method",
        "steps",
        "tail_tokens",
        "error",
    ]
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in t.to_pylist()}
    assert rows["jfk.flac"]["path"].startswith("file://") and rows["jfk.flac"]["language_probability"] is None
    assert set(rows) == {"broken.wav", "jfk.flac", real_clip("de").name, real_clip("en").name}
    bad = rows.pop("broken.wav")
    assert bad["error"].startswith("AudioError") and bad["text"] is None and bad["duration"] is None
    jfk = rows["jfk.flac"]
    assert (
        jfk["error"] is None
        and 10.5 < jfk["duration"] < 11.5
        and jfk["language"] in ("en", "de", "fr", "es", "hi", "zh")
    )
    assert jfk["segments"], "11 s of speech gives at least one segment"
    for s in jfk["segments"]:
        assert 0 <= s["start"] < s["end"] <= jfk["duration"] + 0.01
        for w in s["words"]:  # word times inside their segment, confidences in [0, 1]
            assert s["start"] <= w["start"] <= w["end"] <= s["end"] and 0 <= w["confidence"] <= 1
    assert " ".join(s["text"] for s in jfk["segments"]) == jfk["text"]
    timings = dict(jfk["timings"])
    assert {"encoder", "file"} <= set(timings) and timings["file"] > 0
    assert all(r["error"] is None and r["method"] == "diffusion" for r in rows.values())


def test_batch_rerun_skips_done_files_and_keeps_the_table(batch_run):
    from diffasr.apps.batch import run_batch

    d, inp, out, _ = batch_run
    before = pq.read_table(out).to_pylist()
    manifest = d / "again.jsonl"  # the same files minus the broken one: nothing left to do
    manifest.write_text(
        "".join(
            json.dumps({"audio": f"file://{inp / p.name}" if p.name == "jfk.flac" else f"in/sub/{p.name}"}) + "\n"
            for p in sorted(inp.iterdir())
            if p.suffix in (".wav", ".flac") and p.name != "broken.wav"
        )
    )
    stats = run_batch(str(manifest), out, progress=False)  # no Ray, no model: every file is done
    assert stats == {"files": 3, "skipped": 3, "processed": 0, "failed": 0, "seconds": 0.0}
    assert "ray" not in sys.modules  # nothing to do: Ray never imported, let alone started
    after = pq.read_table(out).to_pylist()
    assert [r["path"] for r in after] == sorted(r["path"] for r in before if r["error"] is None)


def test_batch_jsonl_round_trip_and_inputs(tmp_path, batch_run):
    from diffasr.apps.batch import list_inputs, read_output, write_output

    _, inp, out, _ = batch_run
    rows = pq.read_table(out).to_pylist()
    for r in rows:
        r["timings"] = dict(r["timings"] or [])
    j = tmp_path / "o.jsonl"
    write_output(j, rows)
    assert read_output(j) == rows and not list(tmp_path.glob(".*tmp"))  # temp file renamed away
    by_folder = list_inputs(str(inp.parent))  # recursive; notes.txt and the manifest are not audio
    assert [p["path"].rsplit("/", 1)[-1] for p in by_folder] == sorted(
        p.name for p in inp.iterdir() if p.suffix in (".wav", ".flac")
    )
    by_glob = list_inputs(str(inp / "*.wav"))
    assert [p["path"].rsplit("/", 1)[-1] for p in by_glob] == sorted(p.name for p in inp.glob("*.wav"))
    by_uri = list_inputs(f"file://{inp}")
    assert {p["path"] for p in by_uri} == {f"file://{p}" for p in inp.iterdir() if p.suffix in (".wav", ".flac")}


@pytest.mark.parametrize(
    "args, message",
    [
        (["/nonexistent/dir", "--output", "{tmp}/o.parquet"], "no audio files found"),
        (["{clip}", "--output", "{tmp}/o.csv"], "must end in .parquet or .jsonl"),
    ],
)
def test_batch_bad_input_is_one_line(tmp_path, en_clip, args, message):
    args = [a.format(tmp=tmp_path, clip=en_clip) for a in args]
    r = subprocess.run([sys.executable, "-m", "diffasr", "batch", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "source, output, message",
    [
        ("{clip}", "{tmp}/missing/o.parquet", "output folder does not exist"),
        ("s3x://bucket/x", "{tmp}/o.parquet", "no audio files found"),
        ("{clip}", "{tmp}/bad.parquet", "cannot be read as parquet"),
    ],
)
def test_batch_bad_arguments_raise_before_ray(tmp_path, en_clip, source, output, message):
    from diffasr.apps.batch import run_batch
    from diffasr.errors import DiffasrError

    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DiffasrError, match=message):
        run_batch(source.format(clip=en_clip, tmp=tmp_path), output.format(tmp=tmp_path), progress=False)


def test_row_puts_each_word_in_its_segment():
    """Adjacent VAD chunks: a word starting exactly at a boundary belongs to the segment it starts."""
    from diffasr.apps.batch import _row
    from diffasr.decoding.align import Word
    from diffasr.pipeline.transcribe import Segment, Transcription

    t = Transcription(
        text="a b c",
        language="en",
        duration=4.0,
        timings={"encoder": 0.1, "steps_run": 2},
        segments=[Segment(0.0, 2.0, "a b"), Segment(2.0, 4.0, "c")],
        words=[Word(0.1, 1.0, "a", 0.9), Word(1.0, 2.0, "b", 0.8), Word(2.0, 3.0, "c", 0.7)],
    )
    r = _row("x.wav", t, share=0.5)
    assert [[w["text"] for w in s["words"]] for s in r["segments"]] == [["a", "b"], ["c"]]
    assert r["timings"] == {"encoder": 0.1, "file": 0.5} and r["error"] is None and r["steps"] == 0
