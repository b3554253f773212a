"""Distillation of Whisper-base into the base preset's decoder (issue 33): the teacher's labels on a
real clip, their mapping into a batch's vocabulary, the KL loss, and the own-draft canvases."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import real_clip

from diffasr.training.train_base import distillation_loss, own_drafts, target_text, teacher_targets


def test_teacher_targets_map_into_the_batch_vocabulary_and_renormalise():
    vocab = torch.tensor([3, 7, 11, 50257])
    top = np.array([[7, 3, 99], [11, 98, 97]], np.int32)  # 99, 98, 97: not in the batch's vocabulary
    logp = np.log(np.array([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1]], np.float32)).astype(np.float16)
    idx, p = teacher_targets([{"top": (top, logp)}, {}], vocab, T=3)
    assert idx.shape == (2, 3, 3) and p.shape == (2, 3, 3)
    assert idx[0, 0].tolist() == [1, 0, -1] and idx[0, 1].tolist() == [2, -1, -1]
    assert torch.allclose(p[0, 0], torch.tensor([0.625, 0.375, 0.0]), atol=2e-3)
    assert torch.allclose(p[0, 1], torch.tensor([1.0, 0.0, 0.0]), atol=1e-3)
    assert (idx[0, 2] == -1).all() and (idx[1] == -1).all()  # past the teacher's tokens; no teacher
    assert teacher_targets([{}, {"top": None}], vocab, T=3) is None


def test_distillation_loss_is_zero_at_the_teacher_and_grows_away_from_it():
    p = torch.tensor([[[0.7, 0.2, 0.1]]])
    idx = torch.tensor([[[2, 0, 1]]])
    at_teacher = torch.full((1, 1, 4), -30.0)
    at_teacher[0, 0, [2, 0, 1]] = p[0, 0].log()
    assert distillation_loss(at_teacher, (idx, p)).item() == pytest.approx(0.0, abs=1e-5)
    wrong = torch.zeros(1, 1, 4)
    wrong[0, 0, 3] = 5.0  # mass on a token the teacher does not rank
    assert distillation_loss(wrong, (idx, p)).item() > 3.0
    logits = torch.zeros(1, 1, 4, requires_grad=True)
    distillation_loss(logits, (idx, p)).backward()
    assert logits.grad[0, 0, 2] < 0 < logits.grad[0, 0, 3]  # a step down the gradient raises the teacher's token


def test_distillation_loss_ignores_rows_and_positions_without_a_teacher():
    p = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]])
    idx = torch.tensor([[[0, -1]], [[-1, -1]]])
    logits = torch.randn(2, 3, 5)
    one_row = distillation_loss(logits[:1, :1], (idx[:1], p[:1]))
    assert distillation_loss(logits, (idx, p)).item() == pytest.approx(one_row.item())
    assert distillation_loss(logits, None).item() == 0.0


def test_hindi_targets_drop_quotes_and_the_danda_bar():
    assert target_text('उसने कहा, "चलो" | ठीक है', "hi") == "उसने कहा, चलो ठीक है"
    assert target_text('He said "go".', "en") == 'He said "go".'


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """The teacher's labels of one real English clip."""
    from diffasr.pipeline.manifest import Utterance
    from diffasr.training.teacher import label

    clip = real_clip("en", "picovoice_cheetah_test_en.wav")
    out = tmp_path_factory.mktemp("teacher")
    rows = label([Utterance(audio=clip, text="", lang="en")], out, threads=1, progress=False)
    return rows[0], np.load(rows[0]["teacher"])


def test_the_teacher_writes_whisper_greedy_and_ranks_its_own_tokens_first(labelled):
    from faster_whisper import WhisperModel

    from diffasr.models.encoder import whisper_base_dir

    row, npz = labelled
    fw = WhisperModel(str(whisper_base_dir()), device="cpu", compute_type="int8", cpu_threads=1)
    segs, _ = fw.transcribe(str(row["audio"]), language="en", beam_size=1, without_timestamps=True)
    assert row["text"].strip() == " ".join(s.text.strip() for s in segs)
    ids, top, logp = npz["ids"], npz["top"], npz["logp"]
    assert top.shape == (len(ids) + 1, 8) and logp.shape == top.shape  # + end of text
    # The torch decoder agrees with CTranslate2's greedy choice at (nearly) every position.
    agree = (top[: len(ids), 0] == ids).mean()
    assert agree >= 0.9, agree
    assert (np.diff(logp.astype(np.float32), axis=1) <= 1e-3).all()  # best first
    assert (np.exp(logp.astype(np.float32)).sum(1) <= 1.0 + 1e-2).all()


def test_own_drafts_keep_the_clean_positions_and_draw_the_rest_from_the_alphabet():
    from diffasr.models.whisper_denoiser import DenoiserConfig, WhisperDenoiser
    from diffasr.training.train_base import make_batch

    den = WhisperDenoiser(DenoiserConfig(tokenizer="repaired"))
    texts = ["the cat sat on the mat", "a dog ran"]
    ids = den.tokens.encode_batch(texts, "en")
    den.vocab = {"en": torch.tensor(sorted({i for e in ids for i in e} | {den.tokens.eot}))}
    items = [{"ids": e, "lang": "en"} for e in ids]
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    batch = make_batch(den, items, rng, gen, prefix_prob=1.0)
    feats = [torch.randn(40, 512), torch.randn(30, 512)]
    kv, fmask = den.memory(feats)
    drafted = own_drafts(den, batch, kv, fmask, gen)
    xt, flip, vocab = batch[1], batch[6], batch[5]
    assert drafted.shape == xt.shape
    assert torch.equal(drafted[~flip], xt[~flip])  # the clean prefix and the unflipped tokens stay
    assert torch.isin(drafted[flip], vocab).all()
