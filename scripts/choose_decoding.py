"""Choose decoding settings on the held-out synthetic test set (cached encoder features), never on real_dev.

    python scripts/choose_decoding.py MODEL_DIR '{"ctc": {"decoder": "ctc"}, "edit.9": {"init": "ctc", "sampler": "edit", "edit_threshold": 0.9}}'

Prints CER (%) overall and per language for each named DecodeOptions setting. References are the
tokenizer's spoken form (the training-eval CER), not the eval command's Whisper normalisers.
"""
import sys, torch, json, time
import jiwer
from diffasr.model import DiffusionASR
from diffasr.train import load_config, build_examples, _p
from diffasr.transcribe import decode_features
from diffasr.diffusion import DecodeOptions
from diffasr.tokenizer import spoken_form
from diffasr.encoder import FRAMES_PER_SECOND
torch.set_num_threads(2)
m = DiffusionASR.load(sys.argv[1])
cfg = load_config('configs/small-stage3.toml')
ex = build_examples(m, [_p(cfg, cfg['data']['dev'])], _p(cfg, cfg['data']['cache']), 20.0, desc='dev')
refs = [spoken_form(m.tokenizer.decode(e.ids)) for e in ex]
settings = json.loads(sys.argv[2])
for name, kw in settings.items():
    t = time.time(); hyps = []
    for b in range(0, len(ex), 16):
        bb = ex[b:b+16]
        # keep order: decode per example language groups then reassemble
        out = {}
        for lang in sorted(set(e.lang for e in bb)):
            idx = [i for i, e in enumerate(bb) if e.lang == lang]
            res = decode_features(m, [bb[i].feats for i in idx], [bb[i].feats.shape[0]/FRAMES_PER_SECOND for i in idx],
                                  DecodeOptions(language=lang, **kw), [lang]*len(idx), word_timestamps=False)
            for i, r in zip(idx, res): out[i] = r.text
        hyps += [out[i] for i in range(len(bb))]
    per = {}
    for l in sorted(set(e.lang for e in ex)):
        idx = [i for i, e in enumerate(ex) if e.lang == l]
        per[l] = round(100 * jiwer.cer([refs[i] for i in idx], [hyps[i] for i in idx]), 1)
    print(name, round(100 * jiwer.cer(refs, hyps), 2), per, f"{time.time()-t:.0f}s", flush=True)
