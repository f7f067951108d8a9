"""Reading image files, `keras-vit predict` (and `--explain`), and the TensorFlow-free predictor in `export/`."""

import functools
import json
import os
import re
import runpy
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from keras_vit import images as image_reader
from keras_vit.deploy import predict


@pytest.fixture(scope="module")
def kit_predictor(repo):
    """The path of `export/predict_litert.py`."""
    return str(repo / "export" / "predict_litert.py")


@pytest.fixture(scope="module")
def kit(kit_predictor):
    """The deployment kit predictor's functions (importing it pulls in ai_edge_litert, not TensorFlow)."""
    return runpy.run_path(kit_predictor)


def _readers(kit):
    """Both image readers, as `path -> uint8 (H, W, 3)`; the kit's at the image's own size."""

    def kit_reader(path):
        try:
            with Image.open(path) as image:
                size = image.size[::-1]
        except Exception:  # unreadable: any size, the reader must refuse it first
            size = (8, 8)
        return kit["read_image"](path, size).astype(np.uint8)

    return {"keras_vit": predict.read_image, "export kit": kit_reader}


@pytest.fixture(scope="module")
def images(tmp_path_factory, raw_images):
    folder = tmp_path_factory.mktemp("images")
    rgb = raw_images(1, 30, 40)[0]
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb[:, :, 0]).save(folder / "gray.png")
    Image.fromarray(np.concatenate([rgb, np.zeros((30, 40, 1), np.uint8)], -1)).save(folder / "rgba.png")
    Image.fromarray(rgb).quantize(16).save(folder / "palette.png")
    Image.fromarray(rgb[:, :, 1].astype(np.uint16) * 257).save(folder / "deep.png")  # 16-bit grayscale
    Image.fromarray(rgb).save(folder / "photo.jpg", quality=95)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not an image")
    (folder / "truncated.jpg").write_bytes((folder / "photo.jpg").read_bytes()[:300])
    return folder, rgb


def test_one_list_of_image_types_for_training_prediction_and_the_export_kit(kit):
    from keras_vit.training import data

    assert kit["IMAGE_EXTENSIONS"] == predict.IMAGE_EXTENSIONS == data.IMAGE_EXTENSIONS


@pytest.mark.parametrize("reader", ["keras_vit", "export kit"])
def test_grayscale_rgba_palette_and_16_bit_become_rgb(kit, images, reader):
    folder, rgb = images
    read = _readers(kit)[reader]
    np.testing.assert_array_equal(read(folder / "rgb.png"), rgb)
    np.testing.assert_array_equal(read(folder / "gray.png"), np.repeat(rgb[:, :, :1], 3, -1))
    np.testing.assert_array_equal(read(folder / "rgba.png"), rgb)  # alpha dropped, as TF's decoder does
    np.testing.assert_array_equal(read(folder / "deep.png"), np.repeat(rgb[:, :, 1:2], 3, -1))
    palette = read(folder / "palette.png")
    assert palette.shape == (30, 40, 3) and palette.dtype == np.uint8 and np.abs(palette - rgb.astype(int)).mean() < 40


@pytest.mark.parametrize("reader", ["keras_vit", "export kit"])
@pytest.mark.parametrize(
    "name, message",
    [("empty.png", "is empty"), ("notes.jpg", "is not an image"), ("truncated.jpg", "is a damaged image")],
)
def test_unreadable_files_get_a_clear_message(kit, images, reader, name, message):
    with pytest.raises(ValueError, match=message):
        _readers(kit)[reader](images[0] / name)


def test_huge_images_are_downscaled_while_decoding(tmp_path):
    Image.new("RGB", (6000, 3000), (10, 200, 30)).save(tmp_path / "huge.jpg")
    image = predict.read_image(tmp_path / "huge.jpg")
    assert image.shape == (1024, 2048, 3) and tuple(image[500, 1000]) == pytest.approx((10, 200, 30), abs=3)


@pytest.mark.parametrize("reader", ["keras_vit", "export kit"])
def test_decompression_bombs_are_refused(kit, tmp_path, monkeypatch, reader):
    Image.new("RGB", (200, 100)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 200 x 100 is more than twice this
    with pytest.raises(ValueError, match="too large to decode safely"):
        _readers(kit)[reader](tmp_path / "bomb.png")


def test_large_images_are_downscaled_with_one_note_and_no_warning(tmp_path, monkeypatch, capsys, recwarn):
    Image.new("RGB", (80, 80)).save(tmp_path / "large.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 80 x 80 is over this, under twice this
    monkeypatch.setattr(image_reader, "_noted", set())  # the reader training and predict share
    for _ in range(3):
        assert predict.read_image(tmp_path / "large.png", max_side=40).shape == (40, 40, 3)
    assert capsys.readouterr().err.count("are downscaled to 40 px while read") == 1
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def _parse(printed):
    """`{image path: [(label, probability), ...]}` from predict's output."""
    results, current = {}, None
    for line in printed.splitlines():
        if line.startswith("  "):
            probability, label = line.split()
            results[current].append((label, float(probability)))
        else:
            current = line
            results[current] = []
    return results


@pytest.mark.parametrize(
    "model_path",
    [
        "model.keras",
        "saved_model/vit/1",
        "tflite/vit_float32.tflite",
        "tflite/vit_int8.tflite",
        "onnx/vit.onnx",
        ".",  # the export folder: the one SavedModel it holds
        "saved_model",
    ],
)
def test_predict_agrees_across_model_formats(cli_main, model_dir, exported, images, capsys, model_path, labels):
    if model_path.endswith(".onnx"):
        pytest.importorskip(
            "onnxruntime", reason='the onnx extra is not installed: pip install "keras-vision-transformer[onnx]"'
        )
    folder, _ = images
    good = [str(folder / n) for n in ("rgb.png", "gray.png", "photo.jpg")]
    assert cli_main(["predict", *good, "--model", str(model_dir), "--top-k", "3"]) == 0
    expected = _parse(capsys.readouterr().out)
    root = model_dir if model_path == "model.keras" else exported[0]
    assert cli_main(["predict", *good, "--model", str(root / model_path), "--top-k", "3"]) == 0
    results = _parse(capsys.readouterr().out)
    assert list(results) == good
    tolerance = 0.05 if "int8" in model_path else 1e-3
    for path in good:
        assert len(results[path]) == 3 and all(label in labels for label, _ in results[path])
        assert results[path][0][0] == expected[path][0][0]
        assert results[path][0][1] == pytest.approx(expected[path][0][1], abs=tolerance)


def test_predict_on_a_folder_skips_bad_files_and_says_why(cli_main, exported, images, capsys):
    folder, _ = images
    code = cli_main(["predict", str(folder), "--model", str(exported[0] / "tflite" / "vit_float16.tflite")])
    captured = capsys.readouterr()
    assert code == 1
    assert sorted(os.path.basename(p) for p in _parse(captured.out)) == [
        "deep.png",
        "gray.png",
        "palette.png",
        "photo.jpg",
        "rgb.png",
        "rgba.png",
    ]
    assert captured.err.count("skipped:") == 3 and "notes.jpg is not an image" in captured.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.png", "--model", "m.keras"], "No such image file or folder: missing.png"),
        (["{images}/rgb.png", "--model", "{images}"], "is none of: a .keras file"),
    ],
)
def test_predict_usage_errors_are_one_line(cli_main, images, capsys, args, message):
    args = [a.format(images=images[0]) for a in args]
    assert cli_main(["predict", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "script, model", [("predict_litert.py", "tflite/vit_float32.tflite"), ("predict_onnx.py", "onnx/vit.onnx")]
)
def test_export_kit_predictor_runs_without_tensorflow(exported, images, cli_main, capsys, repo, script, model):
    if script == "predict_onnx.py":
        pytest.importorskip(
            "onnxruntime", reason='the onnx extra is not installed: pip install "keras-vision-transformer[onnx]"'
        )
    folder, _ = images
    model = exported[0] / model
    kit = repo / "export"
    good = [str(folder / n) for n in ("rgb.png", "photo.jpg")]
    # TensorFlow and keras are made unimportable, and checked absent afterwards. The kit's folder is
    # on the path as when the script is run (predict_onnx.py imports predict_litert.py beside it).
    script = (
        "import runpy, sys\n"
        "sys.modules['tensorflow'] = sys.modules['keras'] = None\n"
        f"sys.path.insert(0, {str(kit)!r})\n"
        f"sys.argv = [{script!r}, *{good!r}, '--model', {str(model)!r}, '--top-k', '3']\n"
        "try:\n"
        f"    runpy.run_path({str(kit / script)!r}, run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "assert not [m for m in sys.modules if m.startswith(('tensorflow', 'keras')) and sys.modules[m]]\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ""},
        cwd="/",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert cli_main(["predict", *good, "--model", str(model), "--top-k", "3"]) == 0
    expected = _parse(capsys.readouterr().out)
    results = _parse(result.stdout)
    assert list(results) == good
    for path in good:  # Pillow's antialiased resize stands in for TensorFlow's on the device
        assert [label for label, _ in results[path]][:1] == [label for label, _ in expected[path]][:1]
        assert results[path][0][1] == pytest.approx(expected[path][0][1], abs=0.02)


def test_explain_names_are_unique_across_folders():
    files = ["a/1.png", "b/1.png", "c/1.jpg", "1_2.png", "d/2.png"]
    assert predict.explain_names(files) == ["1", "1_2", "1_3", "1_2_2", "2"]


def test_predict_explain_keeps_the_maps_of_files_with_the_same_name(cli_main, model_dir, tmp_path, capsys, raw_images):
    for folder, seed in (("a", 0), ("b", 1)):
        (tmp_path / folder).mkdir()
        Image.fromarray(raw_images(1, seed=seed)[0]).save(tmp_path / folder / "1.png")
    out = tmp_path / "maps"
    assert (
        cli_main(
            [
                "predict",
                str(tmp_path / "a" / "1.png"),
                str(tmp_path / "b" / "1.png"),
                "--model",
                str(model_dir),
                "--explain",
                str(out),
            ]
        )
        == 0
    )
    assert sorted(os.listdir(out)) == ["1_2_attention.png", "1_2_rollout.png", "1_attention.png", "1_rollout.png"]
    assert (out / "1_rollout.png").read_bytes() != (out / "1_2_rollout.png").read_bytes()
    assert f"wrote {out / '1_2_rollout.png'}" in capsys.readouterr().out


@pytest.fixture
def explain_run(tmp_path, tiny_vit, randomize, write_run_folder):
    """`(run folder, images folder)`: a random tiny ViT at 16x12 with three labels, and two photographs."""
    model = randomize(tiny_vit(image_size=(16, 12), num_classes=3, pooling="token"))
    folder = write_run_folder(tmp_path / "run", model, [str(i) for i in range(3)])
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(images / name)
    return folder, images


def test_predict_explain_writes_overlays(cli_main, explain_run, tmp_path, capsys, not_blank):
    folder, images = explain_run
    out = tmp_path / "explained"
    assert cli_main(["predict", str(images), "--model", str(folder), "--explain", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a_attention.png", "a_rollout.png", "b_attention.png", "b_rollout.png"]
    with Image.open(out / "a_rollout.png") as image:
        assert image.size == (240, 320)  # (30, 40) scaled by 8 so its shorter side reaches 224
    assert all(not_blank(out / name) for name in written)
    assert "wrote" in capsys.readouterr().out


def test_predict_json_prints_one_object_per_image(cli_main, model_dir, images, capsys):
    folder, _ = images
    files = [str(folder / "rgb.png"), str(folder / "notes.jpg")]
    assert cli_main(["predict", *files, "--model", str(model_dir), "--top-k", "2"]) == 1
    plain = _parse(capsys.readouterr().out)
    assert cli_main(["predict", *files, "--model", str(model_dir), "--top-k", "2", "--json"]) == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["path"] for row in rows] == files
    assert [(t["label"], round(t["probability"], 4)) for t in rows[0]["top_k"]] == plain[files[0]]
    assert "is not an image" in rows[1]["error"] and "top_k" not in rows[1]


def test_predict_explain_onto_a_file_fails_before_predicting(cli_main, model_dir, images, tmp_path, capsys):
    (tmp_path / "maps").write_text("not a folder")
    args = ["predict", str(images[0] / "rgb.png"), "--model", str(model_dir), "--explain", str(tmp_path / "maps")]
    assert cli_main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "maps is a file; give a folder for the attention maps" in captured.err


def test_predict_explain_refuses_models_without_attention(tmp_path):
    with pytest.raises(ValueError, match="needs the Keras model"):
        predict.Explainer(tmp_path / "vit.tflite")


@pytest.fixture
def kit_files(exported, tmp_path, raw_images):
    """A model beside a labels.txt of the wrong length, a labels file, a folder without images."""
    shutil.copy(exported[0] / "tflite" / "vit_float32.tflite", tmp_path / "m.tflite")
    (tmp_path / "two_labels.txt").write_text("cat\ndog\n")
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "notes.txt").write_text("hello")
    Image.fromarray(raw_images(1)[0]).save(tmp_path / "img.png")
    return tmp_path


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--model", "m.tflite", "--labels", "two_labels.txt", "img.png"],
            "two_labels.txt has 2 labels but m.tflite has 10 outputs",
        ),
        (
            ["--model", "two_labels.txt", "--labels", "two_labels.txt", "img.png"],
            "two_labels.txt is not a .tflite model",
        ),
        (["--model", "nope.tflite", "img.png"], "no such model file: nope.tflite"),
        (["--model", "m.tflite", "--labels", "nope.txt", "img.png"], "no such labels file: nope.txt"),
        (["--model", "m.tflite", "img.png"], "no labels.txt beside the model or one folder up; pass --labels"),
        (["--model", "m.tflite", "--labels", "two_labels.txt", "no_images"], "no image files (.bmp"),
        (
            ["--model", "m.tflite", "--labels", "two_labels.txt", "missing.png"],
            "no such image file or folder: missing.png",
        ),
        (["--model", "m.tflite", "--top-k", "0", "img.png"], "--top-k=0 must be at least 1"),
    ],
)
def test_export_kit_predictor_usage_errors_are_one_line(kit, kit_files, monkeypatch, capsys, args, message):
    monkeypatch.chdir(kit_files)
    assert kit["main"](args) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""


def _run_script(script, *args, cwd):
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize(
    "names, message",
    [
        (["good.png", "empty.png"], "empty.png is empty (0 bytes)"),
        (["good.png", "notes.txt"], "notes.txt is not a JPEG/PNG/GIF/BMP image"),
        (["missing.jpg"], "no such image file: missing.jpg"),
    ],
)
def test_serving_clients_refuse_files_that_are_no_image(tmp_path, monkeypatch, names, message, raw_images, repo):
    Image.fromarray(raw_images(1)[0]).save(tmp_path / "good.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    result = _run_script(str(repo / "export" / "serving" / "rest_request.py"), *names, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"rest_request.py: error: {message}\n"
    grpc_client = runpy.run_path(str(repo / "export" / "serving" / "grpc_predict.py"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=re.escape(message)):
        grpc_client["read_image_file"](names[-1])


def test_predict_explain_draws_the_halting_depth_of_an_adaptive_model(
    cli_main, tmp_path, tiny_vit, randomize, write_run_folder, not_blank
):
    model = randomize(tiny_vit(num_layers=4, adaptive_tokens=True, halting_gate_scale=5.0, halting_gate_center=0.0))
    folder = write_run_folder(tmp_path / "run", model, ["0", "1", "2"])
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    out = tmp_path / "explained"
    assert cli_main(["predict", str(tmp_path / "a.png"), "--model", str(folder), "--explain", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_attention.png", "a_halting.png", "a_rollout.png"]
    assert not_blank(out / "a_halting.png")
    depth = predict.Explainer(folder).halting_depth(image)
    assert depth.shape == (4, 4) and 1 <= depth.min() and depth.max() <= 4 and len(np.unique(depth)) > 1


def test_onnx_kit_predictor_refuses_what_is_no_keras_vit_onnx_model(repo, exported, tmp_path, monkeypatch, capsys):
    pytest.importorskip(
        "onnxruntime", reason='the onnx extra is not installed: pip install "keras-vision-transformer[onnx]"'
    )
    monkeypatch.syspath_prepend(str(repo / "export"))  # predict_onnx.py imports predict_litert.py
    kit = runpy.run_path(str(repo / "export" / "predict_onnx.py"))
    (tmp_path / "m.onnx").write_text("not a model")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img.png")
    main = functools.partial(kit["main"], model_kind=".onnx", load=kit["load_classifier"])
    assert main(["--model", str(tmp_path / "m.onnx"), str(tmp_path / "img.png")]) == 2
    err = capsys.readouterr().err
    assert "m.onnx is not an .onnx model written by keras-vit export (" in err and err.count("\n") == 1
    (tmp_path / "labels.txt").write_text("a\nb\n")
    onnx_model = str(exported[0] / "onnx" / "vit.onnx")
    assert main(["--model", onnx_model, "--labels", str(tmp_path / "labels.txt"), str(tmp_path / "img.png")]) == 2
    assert "labels.txt has 2 labels but" in capsys.readouterr().err


def test_predict_explain_into_a_read_only_folder_still_prints_the_predictions(
    cli_main, model_dir, images, read_only_folder, capsys
):
    folder, _ = images
    good = [str(folder / n) for n in ("rgb.png", "photo.jpg")]
    maps = read_only_folder / "maps"
    assert cli_main(["predict", *good, "--model", str(model_dir), "--explain", str(maps), "--top-k", "2"]) == 2
    captured = capsys.readouterr()
    assert list(_parse(captured.out)) == good  # every prediction printed
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"keras-vit predict: error: {maps}: ")  # makedirs names the folder it could not make


def test_predict_takes_a_runs_best_checkpoint(cli_main, model_dir, tmp_path, images, capsys):
    """`keras-vit train` lists checkpoints/best.keras: its keras_vit.json is the run's, one folder up."""
    run = tmp_path / "run"
    shutil.copytree(model_dir, run)
    (run / "checkpoints").mkdir()
    shutil.copy(run / "model.keras", run / "checkpoints" / "best.keras")
    image = str(images[0] / "rgb.png")
    assert cli_main(["predict", image, "--model", str(run), "--top-k", "1"]) == 0
    expected = capsys.readouterr().out
    assert cli_main(["predict", image, "--model", str(run / "checkpoints" / "best.keras"), "--top-k", "1"]) == 0
    assert capsys.readouterr().out == expected
