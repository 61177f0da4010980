"""The fp16/int8 gate on the user's own pictures and prompts, with thresholds set per export (real ONNX Runtime)."""

import io

import pytest
from click.testing import CliRunner

from clip_onnx.cli import cli
from clip_onnx.errors import ExportError
from clip_onnx.export.pipeline import export_bundle, export_model
from clip_onnx.files import sha256_bytes, sha256_file
from clip_onnx.synthetic import synthetic_images

PICTURES = 20
PROMPTS = ["красный круг", "синий квадрат", "зелёная звезда", "жёлтый треугольник", "кот на диване"]


def _pictures(folder, count, seed=3):
    """``count`` readable pictures, some in a subfolder and as JPEG, plus a text file and a truncated JPEG."""
    (folder / "more").mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(synthetic_images(count, seed)):
        img.save(folder / ("more" if i % 3 == 0 else ".") / f"p{i:02d}.{'jpg' if i % 2 else 'png'}")
    (folder / "notes.txt").write_text("not a picture\n")
    encoded = io.BytesIO()
    synthetic_images(1, seed + 1000)[0].save(encoded, format="JPEG")
    (folder / "broken.jpg").write_bytes(encoded.getvalue()[: len(encoded.getvalue()) // 8])
    (folder / ".DS_Store").write_bytes(b"\0\1")  # hidden: not even counted
    return folder


@pytest.fixture(scope="module")
def user_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    texts = root / "labels.txt"
    texts.write_text("\n".join(PROMPTS) + "\n\n", encoding="utf-8")
    return _pictures(root / "pictures", PICTURES), texts


def _int8_towers(bundle):
    return {t: g["precision"] for t, g in bundle.manifest.to_dict()["graphs"].items()}


def test_cli_gates_on_the_users_pictures_and_prompts_and_records_them(tiny_checkpoint, user_data, tmp_path):
    folder, texts = user_data
    out = tmp_path / "b"
    result = CliRunner().invoke(
        cli,
        [
            "export",
            str(tiny_checkpoint),
            "-o",
            str(out),
            "--precision",
            "int8",
            "--gate-images",
            str(folder),
            "--gate-texts",
            str(texts),
            "--min-agreement",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"gate inputs: {PICTURES} user images (2 unreadable skipped), {len(PROMPTS)} user prompts" in result.output
    from clip_onnx.bundle import read_bundle

    bundle = read_bundle(out)
    record = bundle.manifest.to_dict()["gate_inputs"]
    used = sorted(p for p in folder.rglob("*") if p.suffix in (".png", ".jpg") and p.name != "broken.jpg")
    listing = "".join(f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}\n" for p in used)
    assert record["images"] == {
        "source": "user",
        "count": PICTURES,
        "skipped": 2,
        "files_sha256": sha256_bytes(listing.encode()),
    }
    assert record["texts"] == {"source": "user", "count": len(PROMPTS), "sha256": sha256_file(texts)}
    assert record["thresholds"]["min_top1_agreement"] == 0.0 and record["overridden"] == ["min_top1_agreement"]
    assert record["thresholds"]["min_cosine"] == 0.998  # the table's int8 default, untouched
    gate = bundle.manifest.to_dict()["parity"][-1]
    # Zero-shot over the user's prompts: every picture fed; the text rows cover every prompt.
    assert gate["passed"] and gate["images"] == PICTURES and gate["thresholds"]["min_top1_agreement"] == 0.0
    assert {r["tower"]: r["batch"] for r in gate["rows"]} == {"visual": PICTURES, "textual": len(PROMPTS)}
    # A random model's towers pass once agreement is not asked for.
    assert _int8_towers(bundle) == {"visual": "int8", "textual": "int8"}


@pytest.mark.parametrize("readable", [0, 15])
def test_too_few_readable_pictures_is_an_error_naming_the_folder(tiny_checkpoint, tmp_path, readable):
    folder = _pictures(tmp_path / "mine", readable)
    with pytest.raises(ExportError, match=f"'{folder}' has {readable} readable pictures \\(2 unreadable"):
        export_bundle(str(tiny_checkpoint), tmp_path / "b", precision="int8", gate_images=folder)
    assert not (tmp_path / "b").exists()


def test_cli_error_for_an_empty_folder_is_one_line(tiny_checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(
        cli,
        [
            "export",
            str(tiny_checkpoint),
            "-o",
            str(tmp_path / "b"),
            "--precision",
            "fp16",
            "--gate-images",
            str(tmp_path / "empty"),
        ],
    )
    assert result.exit_code == 1 and "has 0 readable pictures" in result.output and "empty" in result.output


@pytest.mark.parametrize(
    "options, message",
    [
        ({"precision": "fp32", "min_cosine": 0.99}, "--min-cosine set the fp16/int8 gate; add --precision"),
        ({"precision": "int8", "gate": False, "gate_texts": "x"}, "--gate-texts set the fp16/int8 gate, which is off"),
        ({"precision": "int8", "min_cosine": 1.5}, "--min-cosine 1.5 is not a cosine"),
        ({"precision": "int8", "min_agreement": 99}, r"--min-agreement 99 is not a fraction.*0.99 for 99%"),
        ({"precision": "int8", "gate_images": "/nonexistent/pics"}, "'/nonexistent/pics' is not a folder"),
    ],
)
def test_bad_gate_options_are_refused_before_the_export(tiny_checkpoint, tmp_path, options, message):
    with pytest.raises(ExportError, match=message):
        export_bundle(str(tiny_checkpoint), tmp_path / "b", **options)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("content", ["", "one prompt only\n\n", b"\xff\xfe\xfa"])
def test_a_prompt_file_without_two_prompts_is_refused(tiny_checkpoint, user_data, tmp_path, content):
    texts = tmp_path / "t.txt"
    texts.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ExportError, match="--gate-texts"):
        export_bundle(
            str(tiny_checkpoint), tmp_path / "b", precision="int8", gate_images=user_data[0], gate_texts=texts
        )


def test_timm_classifier_gates_on_user_pictures_only(user_data, tmp_path):
    import timm
    import torch

    from clip_onnx.export.families import timm_clip

    torch.manual_seed(0)
    net = timm.create_model(
        "vit_base_patch32_clip_224.laion2b_ft_in12k_in1k", pretrained=False, depth=2, embed_dim=128, num_heads=4
    ).eval()
    model = timm_clip.exportable("tiny-b32", "tiny", net)
    folder, texts = user_data
    with pytest.raises(ExportError, match="classifier with no text tower"):
        export_model(model, tmp_path / "refused", precision="int8", gate_images=folder, gate_texts=texts)
    # A gate it passes: top-1 not asked for, the table's int8 cosine.
    bundle = export_model(model, tmp_path / "b", precision="int8", gate_images=folder, min_agreement=0)
    record = bundle.manifest.to_dict()["gate_inputs"]
    assert "texts" not in record and record["images"]["count"] == PICTURES
    gate = bundle.manifest.to_dict()["parity"][1]
    assert gate["stage"] == "onnx-int8[visual]" and gate["images"] == PICTURES and gate["passed"]
    assert gate["thresholds"]["min_top1_agreement"] == 0 and gate["rows"][0]["min_cosine"] >= 0.998
    assert bundle.manifest.to_dict()["graphs"]["visual"]["precision"] == "int8"
    # A gate it misses on cosine alone (top-1 again not asked for): a cosine no int8 graph reaches.
    # The tower stays fp32 and says why.
    bundle = export_model(
        model, tmp_path / "m", precision="int8", gate_images=folder, min_agreement=0, min_cosine=0.9999999
    )
    attempts = bundle.manifest.to_dict()["parity"][1:]
    assert attempts and all(not a["passed"] and a["images"] == PICTURES for a in attempts), attempts
    assert all(a["rows"][0]["min_cosine"] < 0.9999999 for a in attempts)
    visual = bundle.manifest.to_dict()["graphs"]["visual"]
    assert visual["precision"] == "fp32" and "missed the gate" in visual["reason"]
