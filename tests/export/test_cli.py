"""The command line, run as a user would: a real subprocess, stderr for errors, no tracebacks."""

import subprocess
import sys

import numpy as np
import pytest

from tests.hardening import assert_one_error_line


def run(*args, check=True):
    result = subprocess.run(
        [sys.executable, "-c", "from clip_onnx.cli import main; main()", *args], capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(f"clip-onnx {' '.join(args)} failed:\n{result.stderr}")
    return result


def test_models_lists_all_six_ruclip_variants():
    out = run("models").stdout
    for name in (
        "base-patch32-224",
        "base-patch16-224",
        "large-patch14-224",
        "base-patch32-384",
        "large-patch14-336",
        "base-patch16-384",
    ):
        assert f"ruclip-vit-{name}" in out and f"ai-forever/ruclip-vit-{name}" in out


def test_export_prints_parity_table_and_writes_bundle(tiny_checkpoint, tmp_path):
    result = run("export", str(tiny_checkpoint), "-o", str(tmp_path / "b"))
    assert "zero-shot top-1 agreement: 100.0%" in result.stdout and "PASS" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("  ")]
    visual = sorted(r[1] for r in rows if r[0] == "visual")
    # Text runs padded to the context and cut to the longest prompt of each batch.
    textual = sorted((r[1], r[2]) for r in rows if r[0] == "textual")
    assert visual == ["1", "3", "8"]
    assert [b for b, _ in textual] == ["1", "1", "3", "3", "8", "8"]
    assert {s for b, s in textual} > {"77"} and all(0 < int(s) <= 77 for _, s in textual)
    assert "Traceback" not in result.stderr and "attn_mask" not in result.stderr
    assert (tmp_path / "b" / "manifest.json").is_file()


def test_help_states_the_thresholds_table():
    from clip_onnx.thresholds import describe

    export_help = " ".join(run("export", "--help").stdout.split())
    assert describe("int8") in export_help and describe("fp16") in export_help
    engine_help = " ".join(run("build-engine", "--help").stdout.split())
    assert describe("engine") in engine_help


def test_classify_prints_the_probabilities_of_clip_model_classify(demo_bundle, tmp_path):
    from PIL import Image

    from clip_onnx.runtime import ClipModel

    labels, templates = ["красный", "синий", "зелёный"], ["{} цвет"]
    paths = []
    for name, rgb in (("red", (220, 30, 30)), ("blue", (30, 40, 210))):
        paths.append(tmp_path / f"{name}.png")
        Image.new("RGB", (96, 96), rgb).save(paths[-1])
    out = run("classify", str(demo_bundle), *map(str, paths), "--labels", *labels, "--templates", *templates)
    expected = ClipModel.load(demo_bundle).classify(paths, labels, templates=templates).probs
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    for path, line, probs in zip(paths, lines, expected, strict=True):
        where, ranked = line.split(": ", 1)
        printed = [item.rsplit(" ", 1) for item in ranked.split(", ")]
        assert where == str(path) and sorted(label for label, _ in printed) == sorted(labels)
        for label, p in printed:
            assert abs(float(p) - probs[labels.index(label)]) <= 5e-4, (line, probs)
        assert [label for label, _ in printed] == [labels[i] for i in np.argsort(-probs, kind="stable")]
    # The trained demo model knows its colours: the printed winner is the colour of the picture.
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == ["красный", "синий"]


def test_embed_writes_the_runtimes_text_vectors(tiny_bundle, tmp_path):
    from clip_onnx.runtime import ClipModel

    run("embed", str(tiny_bundle), "--text", "кошка", "--text", "собака", "-o", str(tmp_path / "t.npy"))
    vectors = np.load(tmp_path / "t.npy")
    np.testing.assert_array_equal(vectors, ClipModel.load(tiny_bundle).encode_text(["кошка", "собака"]))


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["classify", "{bundle}", "missing.jpg", "--labels", "a"], "missing.jpg"),
        (["classify", "/no/bundle", "x.jpg", "--labels", "a"], "/no/bundle"),
        (["export", "not-a-model", "-o", "{tmp}/x"], "not-a-model"),
        (["embed", "{bundle}", "-o", "{tmp}/x.npy"], "either --image or --text"),
    ],
)
def test_user_mistakes_exit_nonzero_with_one_line_and_no_traceback(args, fragment, tiny_bundle, tmp_path):
    args = [a.format(bundle=tiny_bundle, tmp=tmp_path) for a in args]
    result = run(*args, check=False)
    assert result.returncode != 0
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_cli_export_with_an_unsupported_opset_fails_fast_and_writes_nothing(tmp_path):
    result = run("export", "ruclip-demo", "-o", str(tmp_path / "b"), "--opset", "7", check=False)
    assert_one_error_line(result, "--opset 7", "17 to 25")
    assert list(tmp_path.iterdir()) == []


def test_cli_export_overwrite_refuses_a_directory_that_is_not_a_bundle(tmp_path):
    victim = tmp_path / "photos"
    victim.mkdir()
    (victim / "holiday.jpg").write_bytes(b"precious")
    result = run("export", "ruclip-demo", "-o", str(victim), "--overwrite", check=False)
    assert_one_error_line(result, "not a clip-onnx bundle", "photos")
    assert (victim / "holiday.jpg").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]
