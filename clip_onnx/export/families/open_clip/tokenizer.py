"""The tokenizer an open_clip model runs, as a runtime tokenizer checked against open_clip's own, and the
generated Unigram tokenizer that random-weight HF text towers borrow."""

from __future__ import annotations

import json
import logging
import math
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from open_clip.model import CLIP
from open_clip.tokenizer import default_bpe
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

from clip_onnx.errors import BundleError, ExportError, ModelSourceError
from clip_onnx.export.families import _hub
from clip_onnx.runtime.tokenizers.clip_bpe import ClipBpeTokenizer
from clip_onnx.runtime.tokenizers.unigram import UnigramTokenizer

log = logging.getLogger(__name__)

SAMPLE_TEXTS = (
    "a photo of a cat",
    "a dog running on the beach at sunset",
    "itap of a goldfish.",
    "a bad photo of the Eiffel tower at night",
    "A RED CAR parked in front of an old house!",
    "a diagram with 3 people and 2 bicycles",
    "",
    "art of the small hummingbird",
    "an aerial view of a city in the rain, with tall buildings, bridges and a river " * 3,
    "pizza",
)
# Captions in many scripts: the XLM-R parity prompts and, with ImageNet class names, the demo tokenizer's corpus.
MULTILINGUAL_TEXTS = (
    "a photo of a cat sleeping on a sofa",
    "кошка спит на диване",
    "eine Katze schläft auf dem Sofa",
    "un chat qui dort sur le canapé",
    "un perro corriendo en la playa al atardecer",
    "沙发上睡觉的猫",
    "夕日の浜辺を走る犬",
    "소파에서 자는 고양이",
    "قطة نائمة على الأريكة",
    "सोफे पर सोती हुई बिल्ली",
    "kanepede uyuyan bir kedi",
    "kot śpiący na kanapie",
    "кіт спить на дивані",
    "una pizza con tomate y albahaca",
    "γάτα που κοιμάται στον καναπέ",
    "חתול ישן על הספה",
    "một con mèo đang ngủ trên ghế sofa",
    "แมวนอนหลับบนโซฟา",
    "ein roter Wagen vor einem alten Haus",
    "um cachorro correndo na praia",
    "",
    "собака бежит по пляжу " * 12,
)
# Texts that reach the tokenizer's corner cases: accents both ways, fullwidth forms, ZWJ emoji, jamo, spaces.
TOKENIZER_PROBES = (
    "cafe\u0301 café",
    "ＦＵＬＬ　ｗｉｄｔｈ　１２３",
    "👨\u200d👩\u200d👧 🇯🇵 👍🏽",
    "\u1100\u1161\u11a8 각",
    "  many   spaces\t\tand\nlines  ",
    "ﬁne ½ ①",
    "<s> literal </s> <mask>",
    "x" * 300,
)
DEMO_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # XLM-R's ids 0..3
# What the hub's XLM-R tokenizer_config.json says, so AutoTokenizer builds the same class for the demo file.
_DEMO_TOKENIZER_CONFIG = {
    "tokenizer_class": "XLMRobertaTokenizerFast",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
    "model_max_length": 512,
}
DEMO_VOCAB_SIZE = 3000
_MAX_PIECE = 8


def tokenizer_for(model, text_cfg: Mapping, info: dict, random_weights: bool):
    """(manifest spec, bundle files, texts -> feed dict, object to keep alive), as open_clip.get_tokenizer picks."""
    context = int(text_cfg.get("context_length", 77))
    kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
    clean = kwargs.pop("clean", None)
    if kwargs or text_cfg.get("tokenizer_mode"):
        raise ModelSourceError(
            f"tokenizer options {kwargs or text_cfg.get('tokenizer_mode')} of {info['model']!r} "
            f"are not supported by the runtime tokenizers"
        )
    if not isinstance(model, CLIP):
        return _unigram(model, text_cfg, info, context, clean or "whitespace", random_weights)
    if text_cfg.get("hf_tokenizer_name") or "siglip" in info["model"].lower():
        raise ModelSourceError(f"{info['model']!r} uses a tokenizer other than CLIP's BPE; it is not supported")
    vocab = Path(default_bpe())
    spec = {
        "kind": ClipBpeTokenizer.kind,
        "file": vocab.name,
        "context_length": context,
        "clean": clean or "lower",
        "lowercase": False,
        "pad_id": 0,
    }
    tokenizer = ClipBpeTokenizer.from_spec(spec, vocab.parent)
    return spec, {vocab.name: vocab}, tokenizer, None


def _unigram(model, text_cfg, info, context, clean, random_weights):
    """The tokenizer open_clip runs for an HF text tower (``HFTokenizer``), saved into the bundle and checked.

    The bundle carries the file the reference tokenizer saves, not the one it
    read: transformers 5 rebuilds XLM-R's pipeline in its class (the file's
    charsmap, then WhitespaceSplit + Metaspace) and holds the scores as Python
    parsed them, so the saved file, read with exact scores, is what it runs.
    """
    from open_clip.tokenizer import HFTokenizer

    keep = tempfile.TemporaryDirectory(prefix="clip-onnx-tok-")
    work = Path(keep.name)
    if random_weights:
        config = model.text.config
        if config.model_type not in ("xlm-roberta", "roberta"):
            raise ModelSourceError(f"--random-weights has no demo tokenizer for HF model type {config.model_type!r}")
        name = work / "source"
        name.mkdir()
        (name / "tokenizer.json").write_text(demo_unigram_json(), encoding="utf-8")
        (name / "tokenizer_config.json").write_text(json.dumps(_DEMO_TOKENIZER_CONFIG), encoding="utf-8")
        name = str(name)
    elif info["model"].startswith("local-dir:"):
        name = info["model"][len("local-dir:") :]
    else:
        name = text_cfg["hf_tokenizer_name"]
    try:
        reference = HFTokenizer(name, context_length=context, clean=clean)
    except Exception as exc:  # transformers and huggingface_hub raise many unrelated types
        raise _hub.hub_failure(
            f"the tokenizer {name!r}", None, exc, "an open_clip local-dir: checkpoint that holds its tokenizer files"
        ) from None
    reference.save_pretrained(str(work / "saved"))
    spec = {
        "kind": UnigramTokenizer.kind,
        "file": "tokenizer.json",
        "context_length": context,
        "pad_id": int(model.text.config.pad_token_id),
        "clean": clean,
        "scores": "exact",
    }
    try:
        tokenizer = UnigramTokenizer.from_spec(spec, work / "saved")
    except BundleError as exc:
        raise ModelSourceError(f"the runtime Unigram tokenizer cannot use the tokenizer of {name!r}: {exc}") from None
    rows = model.text.config.vocab_size
    if len(reference.tokenizer) > rows:
        raise ModelSourceError(
            f"the tokenizer of {name!r} has {len(reference.tokenizer)} ids but the text tower's "
            f"embedding only {rows} rows"
        )
    _check_tokenizer(reference, tokenizer, (*MULTILINGUAL_TEXTS, *SAMPLE_TEXTS, *TOKENIZER_PROBES), name)
    return spec, {"tokenizer.json": work / "saved" / "tokenizer.json"}, tokenizer, keep


def _check_tokenizer(reference, tokenizer, texts, name: str) -> None:
    """The runtime tokenizer must give open_clip's ids; an export never ships one that does not."""
    expected = reference(list(texts)).numpy()
    got = tokenizer(list(texts))["input_ids"]
    bad = [i for i in range(len(texts)) if not np.array_equal(expected[i], got[i])]
    if bad:
        raise ExportError(
            f"the runtime tokenizer differs from open_clip's tokenizer of {name!r} on {len(bad)} of "
            f"{len(texts)} probe texts, first {texts[bad[0]]!r:.80}: {got[bad[0]].tolist()[:12]} "
            f"against {expected[bad[0]].tolist()[:12]}"
        )
    log.info("runtime tokenizer gives open_clip's ids on %d probe texts", len(texts))


def demo_unigram_json(size: int = DEMO_VOCAB_SIZE) -> str:
    """An XLM-R-shaped Unigram tokenizer.json (ids <s> 0, <pad> 1, </s> 2, <unk> 3) made from built-in text.

    Pieces and scores are the substring frequencies Unigram training starts
    from, without its EM passes: the ``tokenizers`` trainer breaks score ties in
    hash order, so its output differs from run to run, and bundles should not.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    counts: Counter = Counter()
    for line in (*MULTILINGUAL_TEXTS, *IMAGENET_CLASSNAMES):
        for word in unicodedata.normalize("NFKC", line).split():
            word = "\u2581" + word
            for i in range(len(word)):
                for j in range(i + 1, min(len(word), i + _MAX_PIECE) + 1):
                    counts[word[i:j]] += 1
    chars = sorted(p for p in counts if len(p) == 1)
    longer = sorted((p for p, c in counts.items() if len(p) > 1 and c > 1), key=lambda p: (-counts[p], p))
    pieces = chars + longer[: max(0, size - len(DEMO_SPECIALS) - 1 - len(chars))]
    total = sum(counts[p] for p in pieces)
    # XLM-R's last id is <mask>, inside the embedding table.
    vocab = [(s, 0.0) for s in DEMO_SPECIALS] + [(p, math.log(counts[p] / total)) for p in pieces] + [("<mask>", 0.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=DEMO_SPECIALS.index("<unk>"), byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.add_special_tokens([*DEMO_SPECIALS, "<mask>"])
    return tok.to_str()
