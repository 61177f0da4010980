"""Our RuCLIP reimplementation must be ruclip 0.0.2's network, parameter for parameter."""

import pytest
import torch

from clip_onnx.export.families.ruclip import build_model
from tests.conftest import TINY_CONFIG

ARCH = {k: v for k, v in TINY_CONFIG.items() if k not in ("mean", "std")}


def _ids(lengths, vocab=600, ctx=77, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), ctx, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, 0] = 2
        ids[row, 1 : n + 1] = torch.randint(4, vocab, (n,), generator=g)
        ids[row, n + 1] = 3
    return ids


@pytest.fixture(scope="module")
def pair(ruclip_reference):
    torch.manual_seed(0)
    reference = ruclip_reference["model"].CLIP(**ARCH).eval()
    ours = build_model(TINY_CONFIG)
    ours.load_state_dict(reference.state_dict())  # strict: same names, same shapes
    return reference, ours


def test_state_dict_keys_and_shapes_match_ruclip(pair):
    reference, ours = pair
    ref_sd, our_sd = reference.state_dict(), ours.state_dict()
    assert list(ref_sd) == list(our_sd)
    assert all(ref_sd[k].shape == our_sd[k].shape for k in ref_sd)


def test_towers_equal_ruclip_on_texts_of_very_different_lengths(pair):
    reference, ours = pair
    ids = _ids([0, 1, 7, 40, 75])
    pixels = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_text(ids), reference.encode_text(ids), rtol=0, atol=0)
        torch.testing.assert_close(ours.encode_image(pixels), reference.encode_image(pixels), rtol=0, atol=0)


def test_text_is_pooled_at_eos_not_at_the_largest_id(pair):
    # The earlier public RuCLIP ONNX export pooled at argmax(input_ids), which picks
    # the largest token instead of EOS (id 3).  Show the two differ on these inputs,
    # so the equality above really pins the EOS rule.
    _, ours = pair
    ids = _ids([5, 30])
    with torch.no_grad():
        x = ours.token_embedding(ids) + ours.positional_embedding
        x = ours.ln_final(ours.transformer(x))
        wrong = x[torch.arange(2), ids.argmax(dim=-1)] @ ours.text_projection
        assert not torch.allclose(wrong, ours.encode_text(ids), atol=1e-3)


@pytest.mark.parametrize(
    "name",
    [
        "ruclip-vit-base-patch32-224",
        "ruclip-vit-base-patch16-224",
        "ruclip-vit-base-patch32-384",
        "ruclip-vit-base-patch16-384",
        "ruclip-vit-large-patch14-224",
        "ruclip-vit-large-patch14-336",
    ],
)
def test_every_registered_architecture_builds_at_full_size(name, ruclip_reference):
    from clip_onnx.registry import get_model

    config = get_model(name).config
    arch = {k: v for k, v in config.items() if k not in ("mean", "std")}
    with torch.device("meta"):
        ours = build_model(config)
        reference = ruclip_reference["model"].CLIP(**arch)
    shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert shapes == {k: v.shape for k, v in reference.state_dict().items()}
    grid = config["image_resolution"] // config["vision_patch_size"]
    assert shapes["visual.positional_embedding"] == (grid * grid + 1, config["vision_width"])
    assert shapes["token_embedding.weight"] == (49408, config["transformer_width"])
    assert len(ours.visual.transformer.resblocks) == config["vision_layers"]
    assert ours.visual.transformer.resblocks[0].attn.num_heads == config["vision_width"] // 64
    assert ours.transformer.resblocks[0].attn.num_heads == config["transformer_heads"]
