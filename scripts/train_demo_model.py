#!/usr/bin/env python
"""Train the small RuCLIP-format demo model that ships in ``clip_onnx/assets/ruclip-demo``.

The model is RuCLIP's exact architecture (``clip_onnx.export.families.ruclip_model.CLIP``),
only small, trained from scratch on CPU on synthetic images of coloured shapes
with Russian captions (``clip_onnx.demo``).  The output
directory gets RuCLIP's native layout and nothing else:

* ``config.json``        constructor arguments as in ai-forever's repos, plus ``mean``/``std``
* ``pytorch_model.bin``  ``torch.save(model.state_dict())``, fp32
* ``bpe.model``          youtokentome BPE trained on the caption corpus

Training has two contrastive stages.

1. Text: captions that name one attribute ("это звезда", "фигура красного
   цвета", ...) are pulled together when they name the same shape or colour and
   pushed apart otherwise (supervised contrastive loss).  This spreads the 16
   concepts apart; a random text tower maps them all close together.
2. Images, with the text tower locked (LiT, Zhai et al. 2022, with the roles of
   the towers swapped): CLIP's symmetric image-text cross-entropy, one softmax
   over the batch's shape captions and one over its colour captions, targets
   spread over every caption that is true of an image.

The images never show a (colour, shape) pair of ``demo.HELD_OUT_COMBOS``.
Why the recipe is what it is (input size, steps, unnamed colours, masking)
is in benchmarks/NOTES.md.  Tokenization, preprocessing and zero-shot
ensembling are the runtime's own (``clip_onnx.runtime``), so the model trains
on exactly what a bundle feeds it.

Evaluation: RuCLIP ``Predictor``-style zero-shot classification of shape and
of colour on images of the held-out (unseen) pairs and of seen pairs; the
figures are printed and written to ``scripts/demo_model_metrics.json``.

Everything is seeded and runs single-process with a fixed thread count, so a
re-run reproduces the checkpoint (bit for bit on the same machine and torch
build).  Usage::

    python scripts/train_demo_model.py --out clip_onnx/assets/ruclip-demo
"""

from __future__ import annotations

import argparse
import colorsys
import contextlib
import functools
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import youtokentome as yttm
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clip_onnx import demo  # noqa: E402
from clip_onnx.export.families.ruclip import NATIVE_FILES, build_model, preprocess_spec, tokenizer_spec  # noqa: E402
from clip_onnx.export.families.ruclip_model import CLIP  # noqa: E402
from clip_onnx.runtime.preprocess import CLIP_MEAN, CLIP_STD, ImagePreprocessor  # noqa: E402
from clip_onnx.runtime.tokenizers import Tokenizer, load_tokenizer  # noqa: E402
from clip_onnx.runtime.zero_shot import label_embeddings, prompts_for  # noqa: E402

log = logging.getLogger("train_demo_model")

CONTEXT_LENGTH = 77  # RuCLIPProcessor pads to 77
N_SHAPES, N_COLOURS = len(demo.SHAPES), len(demo.COLOURS)
EVAL_SEED_UNSEEN = 20240607  # demo.heldout_set's default; the test uses it too
EVAL_SEED_SEEN = 20240608


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


def train_bpe(directory: Path, vocab_size: int, corpus_size: int, seed: int) -> tuple[Tokenizer, int]:
    """Train youtokentome BPE on the caption corpus into ``directory``; the runtime's tokenizer for it, vocab size."""
    spec = tokenizer_spec(CONTEXT_LENGTH)
    corpus = demo.caption_corpus(corpus_size, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "corpus.txt"
        data.write_text("\n".join(corpus) + "\n", encoding="utf-8")
        # One thread: youtokentome's multi-threaded counting may order ties differently.
        yttm.BPE.train(
            data=str(data),
            model=str(directory / spec["file"]),
            vocab_size=vocab_size,
            n_threads=1,
            pad_id=spec["pad_id"],
            unk_id=1,
            bos_id=spec["bos_id"],
            eos_id=spec["eos_id"],
        )
    vocab = yttm.BPE(str(directory / spec["file"]), n_threads=1).vocab_size()
    return load_tokenizer(spec, directory), vocab


def tokenize(tokenizer: Tokenizer, texts: list[str]) -> torch.Tensor:
    """RuCLIPProcessor.encode_text for a batch, through the runtime's tokenizer."""
    return torch.from_numpy(tokenizer(texts)["input_ids"])


# ---------------------------------------------------------------------------
# Model helpers
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def causal_prefix(model: CLIP, length: int):
    """Let the text tower run on the first ``length`` positions only.

    The text transformer is causal and pools at EOS, so positions after EOS
    never influence the pooled feature: running a truncated sequence is exact
    and saves most of the text tower's compute.  Restores the 77x77 mask.
    """
    blocks = list(model.transformer.resblocks)
    saved = [b.attn_mask for b in blocks]
    try:
        for b, mask in zip(blocks, saved, strict=True):
            b.attn_mask = mask[:length, :length]
        yield
    finally:
        for b, mask in zip(blocks, saved, strict=True):
            b.attn_mask = mask


def encode_text_prefix(model: CLIP, ids: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` for ids truncated to a prefix that holds every EOS."""
    length = ids.shape[1]
    with causal_prefix(model, length):
        x = model.token_embedding(ids) + model.positional_embedding[:length]
        x = model.transformer(x)
        x = model.ln_final(x)
        eos = (ids == model.eos_id).int().argmax(dim=-1)
        return x[torch.arange(x.shape[0]), eos] @ model.text_projection


# ---------------------------------------------------------------------------
# Data: caption bank and image pool
# ---------------------------------------------------------------------------


def caption_bank(tokenizer: Tokenizer, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` one-attribute captions, half shape-only, half colour-only, and their concepts.

    Concept k < N_SHAPES is shape k; N_SHAPES + c is colour c.  Returns ids
    trimmed to the longest caption (see :func:`encode_text_prefix`).
    """
    rng = np.random.default_rng(seed)
    texts, concepts = [], []
    for k in range(n):
        colour, shape = int(rng.integers(N_COLOURS)), int(rng.integers(N_SHAPES))
        background = demo.BACKGROUNDS[rng.integers(len(demo.BACKGROUNDS))]
        fake = demo.Sample(
            None, demo.COLOURS[colour], demo.SHAPES[shape], background, demo.SIZES[rng.integers(len(demo.SIZES))]
        )
        kind = "shape" if k % 2 == 0 else "colour"
        texts.append(demo.describe(fake, rng, kind)[0])
        concepts.append(shape if kind == "shape" else N_SHAPES + colour)
    ids = tokenize(tokenizer, texts)
    return ids[:, : int((ids != tokenizer.pad_id).sum(1).max())], torch.tensor(concepts)


_REFERENCE_RGB = np.array([demo.reference_rgb(c) for c in demo.COLOURS], np.float32)
_HELD_OUT = {(demo.COLOURS.index(c), demo.SHAPES.index(s)) for c, s in demo.HELD_OUT_COMBOS}


def nearest_colour(rgb: np.ndarray) -> int:
    """Index of the named colour whose reference RGB is nearest (the colour's cell)."""
    return int(np.argmin(((_REFERENCE_RGB - rgb) ** 2).sum(1)))


def unnamed_rgb(rng: np.random.Generator, shape: int) -> tuple[np.ndarray, int]:
    """A random saturated colour for ``shape`` outside any held-out pair's cell, and its cell."""
    while True:
        rgb = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.45, 1), rng.uniform(0.55, 1))) * 255
        cell = nearest_colour(rgb)
        if (cell, shape) not in _HELD_OUT:
            return rgb, cell


def render_pool(named: int, unnamed: int, preprocess: ImagePreprocessor, seed: int) -> dict[str, np.ndarray]:
    """Training images, already cropped and resized (uint8 NHWC, ``preprocess.pixels``), with their labels.

    ``named`` images of seen pairs, then ``unnamed`` of random colours
    (``colour`` -1); ``cell`` is the colour cell of every image.
    """
    rng = np.random.default_rng(seed)
    n, side = named + unnamed, preprocess.spec.image_size
    pool = {
        "pixels": np.empty((n, side, side, 3), np.uint8),
        "shape": np.empty(n, np.int64),
        "colour": np.full(n, -1, np.int64),
        "cell": np.empty(n, np.int64),
    }
    seen = [(demo.COLOURS.index(c), demo.SHAPES.index(s)) for c, s in demo.SEEN_COMBOS]
    for i in tqdm(range(n), desc="rendering", unit="img", mininterval=2, leave=False):
        if i < named:
            colour, shape = seen[rng.integers(len(seen))]
            sample = demo.render(rng, demo.COLOURS[colour], demo.SHAPES[shape])
            pool["colour"][i] = pool["cell"][i] = colour
        else:
            shape = int(rng.integers(N_SHAPES))
            rgb, pool["cell"][i] = unnamed_rgb(rng, shape)
            sample = demo.render(rng, None, demo.SHAPES[shape], rgb=rgb)
        pool["shape"][i] = shape
        pool["pixels"][i] = preprocess.pixels([sample.image])[0]
    return pool


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------


def supcon_loss(emb: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) over one batch of embeddings."""
    emb = F.normalize(emb, dim=-1)
    eye = torch.eye(len(labels), dtype=torch.bool)
    positive = ((labels[:, None] == labels[None]) & ~eye).float()
    logp = F.log_softmax((scale * emb @ emb.T).masked_fill(eye, float("-inf")), dim=1).masked_fill(eye, 0.0)
    return -((logp * positive).sum(1) / positive.sum(1).clamp(min=1)).mean()


def clip_loss(
    images: torch.Tensor,
    texts: torch.Tensor,
    image_labels: torch.Tensor,
    text_labels: torch.Tensor,
    scale: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """CLIP's symmetric cross-entropy on normalised embeddings, targets spread over every match.

    ``valid[i, j]`` (optional) says which pairs take part; the rest are left
    out of both softmaxes.
    """
    logits = scale * images @ texts.T
    match = image_labels[:, None] == text_labels[None]
    if valid is not None:
        logits = logits.masked_fill(~(valid | match), float("-inf"))
    target = match.float()

    def side(lg: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(lg, dim=1).masked_fill(t == 0, 0.0)
        return -(t / t.sum(1, keepdim=True) * logp).sum(1).mean()

    return (side(logits, target) + side(logits.T, target.T)) / 2


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def is_text_param(name: str) -> bool:
    """Whether a CLIP parameter belongs to the text tower (logit_scale counts as image side)."""
    return not name.startswith("visual.") and name != "logit_scale"


# ---------------------------------------------------------------------------
# Zero-shot evaluation (RuCLIP Predictor style)
# ---------------------------------------------------------------------------


@torch.no_grad()
def text_embeddings(model: CLIP, tokenizer: Tokenizer, texts: list[str], batch_size: int = 256) -> np.ndarray:
    ids = tokenize(tokenizer, texts)
    emb = torch.cat([model.encode_text(ids[i : i + batch_size]) for i in range(0, len(ids), batch_size)])
    return F.normalize(emb, dim=-1).numpy()


@torch.no_grad()
def image_embeddings(model: CLIP, samples, preprocess: ImagePreprocessor, batch_size: int = 256) -> np.ndarray:
    out = []
    for i in range(0, len(samples), batch_size):
        pixels = preprocess([s.image for s in samples[i : i + batch_size]])
        out.append(model.encode_image(torch.from_numpy(pixels)))
    return F.normalize(torch.cat(out), dim=-1).numpy()


def zero_shot_accuracy(model: CLIP, tokenizer: Tokenizer, samples, preprocess: ImagePreprocessor) -> dict:
    model.eval()
    images = image_embeddings(model, samples, preprocess)
    result = {"n_images": len(samples)}

    def predict(labels, templates) -> np.ndarray:
        encode = functools.partial(text_embeddings, model, tokenizer)
        return (images @ label_embeddings(encode, labels, templates).T).argmax(1)

    for task, labels, templates, attr in (
        ("shape", demo.SHAPE_LABELS, demo.SHAPE_TEMPLATES, "shape"),
        ("colour", demo.COLOUR_LABELS, demo.COLOUR_TEMPLATES, "colour"),
    ):
        truth = np.array([labels.index(getattr(s, attr)) for s in samples])
        result[f"{task}_accuracy"] = round(float((predict(labels, templates) == truth).mean()), 4)
    # Both at once: one label per (colour, shape) pair, e.g. "красный круг".
    pairs = demo.ALL_COMBOS
    pred = predict([demo.pair_label(c, s) for c, s in pairs], demo.PAIR_TEMPLATES)
    truth = np.array([pairs.index((s.colour, s.shape)) for s in samples])
    result["pair_accuracy"] = round(float((pred == truth).mean()), 4)
    return result


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def train_text(
    model: CLIP, bank_ids: torch.Tensor, concepts: torch.Tensor, args: argparse.Namespace, rng: np.random.Generator
) -> None:
    params = [p for n, p in model.named_parameters() if is_text_param(n)]
    opt = torch.optim.AdamW(params, lr=args.text_lr, weight_decay=0.0)
    model.train()
    for _ in tqdm(range(args.text_steps), desc="text tower", unit="step", mininterval=2, leave=False):
        idx = torch.from_numpy(rng.choice(len(bank_ids), args.text_batch_size, replace=False))
        loss = supcon_loss(encode_text_prefix(model, bank_ids[idx]), concepts[idx], args.text_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    log.info("text tower: supervised contrastive loss %.3f after %d steps", loss.item(), args.text_steps)


def pick_captions(rng: np.random.Generator, by_concept: list[np.ndarray], concepts: np.ndarray) -> np.ndarray:
    """One random bank caption of each requested concept."""
    return np.array([by_concept[k][rng.integers(len(by_concept[k]))] for k in concepts])


def train_image(
    model: CLIP,
    bank: torch.Tensor,
    concepts: torch.Tensor,
    pool: dict,
    preprocess: ImagePreprocessor,
    args: argparse.Namespace,
    rng: np.random.Generator,
    probe=None,
) -> None:
    """Image tower against the locked text tower's embeddings of the caption bank."""
    for name, p in model.named_parameters():
        p.requires_grad_(not is_text_param(name) and name != "logit_scale")
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "embedding" not in n]
    rest = [p for p in params if all(p is not q for q in decay)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    by_concept = [np.flatnonzero(concepts.numpy() == k) for k in range(N_SHAPES + N_COLOURS)]
    held = torch.zeros(N_COLOURS, N_SHAPES, dtype=torch.bool)
    for colour, shape in _HELD_OUT:
        held[colour, shape] = True
    n = len(pool["shape"])
    bar = tqdm(range(args.steps), desc="image tower", unit="step", mininterval=5)
    running = None
    for step in bar:
        model.train()
        idx = np.sort(rng.choice(n, args.batch_size, replace=False))
        crops = pool["pixels"][idx]
        # Every shape here is itself under a horizontal flip: twice the pool for free.
        flip = rng.random(len(idx)) < 0.5
        crops[flip] = crops[flip, :, ::-1]
        images = F.normalize(model.encode_image(torch.from_numpy(preprocess.normalize(crops))), dim=-1)
        shape, colour, cell = (torch.from_numpy(pool[k][idx]) for k in ("shape", "colour", "cell"))

        captions = pick_captions(rng, by_concept, shape.numpy())
        valid = ~held[cell][:, shape] if args.mask_held_out else None
        loss = clip_loss(images, bank[captions], shape, shape, args.scale, valid)
        named = colour >= 0
        captions = pick_captions(rng, by_concept, N_SHAPES + colour[named].numpy())
        loss = loss + args.colour_weight * clip_loss(
            images[named], bank[captions], colour[named], colour[named], args.scale
        )
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0 or step == args.steps - 1:
            bar.set_postfix(loss=f"{running:.3f}")
        if probe is not None and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            bar.write(f"step {step + 1}: loss {running:.3f} | {probe(model)}")
    bar.close()


def train(args: argparse.Namespace, config: dict, tokenizer: Tokenizer) -> CLIP:
    torch.manual_seed(args.seed)
    model = build_model(config)
    preprocess = ImagePreprocessor(preprocess_spec(config))
    bank_ids, concepts = caption_bank(tokenizer, args.caption_bank, args.seed + 1)
    train_text(model, bank_ids, concepts, args, np.random.default_rng(args.seed + 2))
    with torch.no_grad():
        model.eval()
        bank = F.normalize(
            torch.cat([encode_text_prefix(model, bank_ids[i : i + 512]) for i in range(0, len(bank_ids), 512)]), dim=-1
        )
        # The runtime turns similarities into probabilities with the checkpoint's scale.
        model.logit_scale.fill_(math.log(args.scale))

    t0 = time.perf_counter()
    pool = render_pool(args.named_images, args.unnamed_images, preprocess, args.seed + 3)
    log.info("rendered %d training images in %.1fs", len(pool["shape"]), time.perf_counter() - t0)
    probe = progress_probe(tokenizer, preprocess) if args.eval_every else None
    train_image(model, bank, concepts, pool, preprocess, args, np.random.default_rng(args.seed + 4), probe)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return model


def progress_probe(tokenizer: Tokenizer, preprocess: ImagePreprocessor):
    """A function printing zero-shot figures on 200 other pictures of each split, for --eval-every."""
    samples = {
        split: demo.heldout_set(200, EVAL_SEED_UNSEEN + 10 + i, split) for i, split in enumerate(("unseen", "seen"))
    }

    def probe(model: CLIP) -> str:
        figures = {s: zero_shot_accuracy(model, tokenizer, v, preprocess) for s, v in samples.items()}
        return " | ".join(
            f"{s}: shape {f['shape_accuracy']:.1%} colour {f['colour_accuracy']:.1%}" for s, f in figures.items()
        )

    return probe


def check_prefix_is_exact(model: CLIP, tokenizer: Tokenizer) -> None:
    """The truncated text pass used in training must equal the real 77-token one."""
    ids = tokenize(tokenizer, prompts_for(demo.SHAPE_LABELS, demo.SHAPE_TEMPLATES))
    with torch.no_grad():
        full = model.encode_text(ids)
        short = encode_text_prefix(model, ids[:, : int((ids != tokenizer.pad_id).sum(1).max())])
    if not torch.allclose(full, short, atol=1e-5):
        raise AssertionError(f"prefix text encoding differs by {(full - short).abs().max().item()}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "clip_onnx" / "assets" / "ruclip-demo",
        help="output directory (config.json, pytorch_model.bin, bpe.model)",
    )
    p.add_argument(
        "--metrics",
        type=Path,
        default=REPO / "scripts" / "demo_model_metrics.json",
        help="where to write the evaluation figures (JSON); '-' to skip",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    g = p.add_argument_group("architecture (RuCLIP config.json keys)")
    g.add_argument("--embed-dim", type=int, default=64)
    g.add_argument("--image-resolution", type=int, default=64)
    g.add_argument("--vision-layers", type=int, default=4)
    g.add_argument("--vision-width", type=int, default=64, help="multiple of 64; heads = width // 64")
    g.add_argument("--vision-patch-size", type=int, default=8)
    g.add_argument("--transformer-width", type=int, default=64)
    g.add_argument("--transformer-heads", type=int, default=2)
    g.add_argument("--transformer-layers", type=int, default=3)
    g.add_argument("--vocab-size", type=int, default=400, help="BPE vocabulary size (an upper bound)")
    g.add_argument("--corpus-size", type=int, default=30000, help="captions to train the BPE on")
    g = p.add_argument_group("text stage")
    g.add_argument("--caption-bank", type=int, default=4000, help="one-attribute captions to train on")
    g.add_argument("--text-steps", type=int, default=200)
    g.add_argument("--text-batch-size", type=int, default=256)
    g.add_argument("--text-lr", type=float, default=2e-3)
    g.add_argument("--text-scale", type=float, default=10.0, help="inverse temperature of the text loss")
    g = p.add_argument_group("image stage")
    g.add_argument("--steps", type=int, default=2000)
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--lr", type=float, default=2e-3)
    g.add_argument("--warmup", type=int, default=100)
    g.add_argument("--weight-decay", type=float, default=0.05)
    g.add_argument("--scale", type=float, default=20.0, help="logit scale (inverse temperature), also saved")
    g.add_argument("--colour-weight", type=float, default=0.5, help="weight of the colour-caption loss")
    g.add_argument("--named-images", type=int, default=12000, help="rendered images of seen pairs")
    g.add_argument("--unnamed-images", type=int, default=8000, help="rendered shapes in random unnamed colours")
    g.add_argument(
        "--mask-held-out",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="leave captions of a shape out of the softmax for images of a colour cell never seen with it",
    )
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval-size", type=int, default=1000, help="test images for each of unseen and seen pairs")
    g.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="every N steps print zero-shot accuracy on 200 other images of each split (0: never)",
    )
    args = p.parse_args(argv)
    if args.vision_width % 64:
        p.error("--vision-width must be a multiple of 64 (RuCLIP uses width // 64 heads)")
    if args.transformer_width % args.transformer_heads:
        p.error("--transformer-width must be divisible by --transformer-heads")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    np.random.seed(args.seed)
    start = time.perf_counter()

    out: Path = args.out
    if out.exists() and set(os.listdir(out)) - set(NATIVE_FILES):
        raise SystemExit(
            f"{out} holds {sorted(set(os.listdir(out)) - set(NATIVE_FILES))}; "
            "the asset directory must hold only the three native files"
        )
    # Written beside the target and swapped in at the end: a failed run leaves the old asset whole.
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    stage.chmod(0o755)  # mkdtemp's 0700 would carry over to the asset
    try:
        return _run(args, out, stage, start)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _run(args: argparse.Namespace, out: Path, stage: Path, start: float) -> int:
    tokenizer, vocab_size = train_bpe(stage, args.vocab_size, args.corpus_size, args.seed)
    config = {
        "embed_dim": args.embed_dim,
        "image_resolution": args.image_resolution,
        "vision_layers": args.vision_layers,
        "vision_width": args.vision_width,
        "vision_patch_size": args.vision_patch_size,
        "context_length": CONTEXT_LENGTH,
        "vocab_size": vocab_size,
        "transformer_width": args.transformer_width,
        "transformer_heads": args.transformer_heads,
        "transformer_layers": args.transformer_layers,
        "mean": list(CLIP_MEAN),
        "std": list(CLIP_STD),
    }
    log.info("config: %s", json.dumps(config, ensure_ascii=False))

    model = train(args, config, tokenizer)
    train_seconds = time.perf_counter() - start
    check_prefix_is_exact(model, tokenizer)

    torch.save(model.state_dict(), stage / "pytorch_model.bin")
    (stage / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    # Round trip: the saved files must load strictly into a fresh CLIP.
    check = build_model(config)
    check.load_state_dict(torch.load(stage / "pytorch_model.bin", map_location="cpu", weights_only=True), strict=True)
    size = sum(f.stat().st_size for f in stage.iterdir())

    preprocess = ImagePreprocessor(preprocess_spec(config))
    metrics = {
        "config": config,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "asset_bytes": size,
        "train_wall_seconds": round(train_seconds, 1),
        "torch": torch.__version__,
        "args": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "metrics")
        },
        "zero_shot": {
            "shape_labels": list(demo.SHAPE_LABELS),
            "shape_templates": list(demo.SHAPE_TEMPLATES),
            "colour_labels": list(demo.COLOUR_LABELS),
            "colour_templates": list(demo.COLOUR_TEMPLATES),
            "pair_templates": list(demo.PAIR_TEMPLATES),
        },
        "held_out_combos": [list(c) for c in demo.HELD_OUT_COMBOS],
        "unseen": zero_shot_accuracy(
            check, tokenizer, demo.heldout_set(args.eval_size, EVAL_SEED_UNSEEN, "unseen"), preprocess
        ),
        "seen": zero_shot_accuracy(
            check, tokenizer, demo.heldout_set(args.eval_size, EVAL_SEED_SEEN, "seen"), preprocess
        ),
    }
    if out.exists():
        old = out.with_name(f".{out.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        stage.rename(out)
        shutil.rmtree(old)
    else:
        stage.rename(out)
    log.info("wrote %s (%.2f MB) after %.0fs of training", out, size / 2**20, train_seconds)
    for split in ("unseen", "seen"):
        m = metrics[split]
        print(
            f"{split:>6} pairs ({m['n_images']} images): shape {m['shape_accuracy']:.1%}  "
            f"colour {m['colour_accuracy']:.1%}  colour+shape {m['pair_accuracy']:.1%}"
        )
    if str(args.metrics) != "-":
        args.metrics.write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        log.info("metrics in %s", args.metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
