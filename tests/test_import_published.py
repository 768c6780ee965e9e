"""`iwu import`: checkpoints of the published code become runs that evaluate, predict, masks and report read."""

import json

import numpy as np
import pytest
import torch
import yaml

from iwu.cli import main
from iwu.data.synthetic import write_synthetic
from iwu.errors import UserError
from iwu.inference.loading import load_models
from iwu.models import build_model
from iwu.interop.published import import_published
from published_layout import FIXTURES, fill_with_the_fixture_weights, save_published_checkpoint

MOBILENET, RESNET50 = "deeplabv3plus_mobilenet", "deeplabv3plus_resnet50"
METHOD = "uncertainty_instance_ensembling"


def published_file(folder, model, *, seed=1, os=16, dataset="cityscapes", tag=None, classes=19, weights=None):
    torch.manual_seed(seed)
    net = build_model(model, classes, output_stride=os, pretrained=False)
    if weights is not None:
        weights(net)
    name = f"best_{model}_{dataset}_os{os}_seed{seed}" + (f"_{tag}" if tag else "") + ".pth"
    folder.mkdir(parents=True, exist_ok=True)
    return save_published_checkpoint(net, folder / name), net


@pytest.mark.parametrize("output_stride", [16, 8])
def test_a_published_mobilenet_gives_the_published_logits_once_imported(tmp_path, capsys, output_stride):
    path, _ = published_file(tmp_path / "ckpt", MOBILENET, seed=3, os=output_stride,
                             weights=fill_with_the_fixture_weights)
    assert main(["import", str(path), "--out", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "standard" / "seed3"
    assert str(run) in capsys.readouterr().out

    loaded = load_models(run, "cpu")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["seed"], config["mode"], config["experiment"]) == (3, "standard", "published")
    assert config["model"]["output_stride"] == output_stride and config["members"][0]["name"] == MOBILENET
    with np.load(FIXTURES / "outputs.npz") as published:
        x, expected = torch.from_numpy(published["input"]).float(), published[f"os{output_stride}_eval"]
    with torch.no_grad():
        logits = loaded.module.members[0](x).double().numpy()
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)  # weights saved in float32
    assert (logits.argmax(1) == expected.argmax(1)).mean() > 0.999

    final = json.loads((run / "final.json").read_text())
    assert final["results"] == {} and final["steps"] == 1000 and final["dataset"] == "cityscapes"
    assert final["imported"]["best_miou"] == {MOBILENET: 0.61}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("scenes") / "cs", "cityscapes", n_train=2, n_val=2, size=32,
                           height=32)


@pytest.mark.slow
def test_an_ensembles_files_become_one_run_that_every_command_reads(tmp_path, scenes, capsys):
    ckpts = tmp_path / "ckpt"
    files = [published_file(ckpts, MOBILENET, seed=1, tag=METHOD), published_file(ckpts, RESNET50, seed=1, tag=METHOD),
             published_file(ckpts, MOBILENET, seed=2, tag=METHOD)]
    out = tmp_path / "runs"
    runs = import_published([str(p) for p, _ in files], out, size=32)
    assert runs == [out / "instance_uncertainty" / "seed1", out / "instance_uncertainty" / "seed2"]

    loaded = load_models(runs[0], "cpu")
    assert loaded.module.names == [MOBILENET, RESNET50]
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        for member, (_, net) in zip(loaded.module.members, files[:2]):
            assert torch.equal(member(x), net.eval()(x))  # the weights, unchanged, in the same network

    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    assert "no scores yet: score them with iwu evaluate" in capsys.readouterr().err
    for run in runs:
        assert main(["evaluate", str(run), "--data", f"cityscapes:{scenes}"]) == 0
    record = json.loads((runs[0] / "eval_cityscapes.json").read_text())
    assert list(record["results"]) == [MOBILENET, RESNET50, "ensemble"]
    capsys.readouterr()
    assert main(["report", str(out), "--member", "all"]) == 0
    table = capsys.readouterr().out
    assert MOBILENET in table and RESNET50 in table and "instance_uncertainty" in table

    image = next((scenes / "leftImg8bit" / "val").rglob("*.png"))
    assert main(["predict", str(runs[0]), str(image), "--out", str(tmp_path / "pred")]) == 0
    assert any((tmp_path / "pred").iterdir())
    assert main(["masks", str(runs[0]), "--data", f"cityscapes:{scenes}", "--out", str(tmp_path / "masks")]) == 0
    assert any((tmp_path / "masks").iterdir())


def test_each_file_its_own_run_and_options_for_other_names(tmp_path):
    a, _ = published_file(tmp_path / "ckpt", MOBILENET, seed=4)
    renamed = a.rename(tmp_path / "ckpt" / "my_mobilenet.pth")
    runs = import_published([renamed], tmp_path / "runs", dataset="acdc", seed=7, each=True, mode="focal")
    assert runs == [tmp_path / "runs" / "focal" / "my_mobilenet" / "seed7"]
    final = json.loads((runs[0] / "final.json").read_text())
    assert (final["dataset"], final["seed"], final["mode"]) == ("acdc", 7, "focal")


def test_other_class_counts_need_their_names(tmp_path):
    path, _ = published_file(tmp_path / "ckpt", MOBILENET, dataset="voc", classes=3)
    with pytest.raises(UserError, match="3 classes of voc; name them with --classes"):
        import_published([path], tmp_path / "runs")
    with pytest.raises(UserError, match="--classes names 2 classes"):
        import_published([path], tmp_path / "runs", classes=["a", "b"])
    run, = import_published([path], tmp_path / "runs", classes=["background", "cat", "dog"])
    assert load_models(run, "cpu").module.classes == ("background", "cat", "dog")


@pytest.mark.parametrize("dataset, classes", [("kvasir", ("background", "polyp")), ("voc", None)])
def test_kvasir_and_voc_models_keep_their_dataset_and_its_classes(tmp_path, dataset, classes):
    from iwu.data.kvasir import MEAN as KVASIR_MEAN
    from iwu.data.sources import image_statistics
    from iwu.data.voc import CLASSES as VOC_CLASSES

    classes = classes or VOC_CLASSES
    path, _ = published_file(tmp_path / "ckpt", MOBILENET, dataset=dataset, classes=len(classes))
    run, = import_published([path], tmp_path / "runs")
    loaded = load_models(run, "cpu")
    assert loaded.module.classes == tuple(classes) and loaded.config.data.kind == dataset
    # predict and evaluate normalise as the published code trained it: Kvasir-SEG with its own statistics
    assert (image_statistics(loaded.config.data.kind)[0] == KVASIR_MEAN) == (dataset == "kvasir")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_bad_files_are_one_line_errors_and_nothing_is_overwritten(tmp_path, capsys):
    ckpts = tmp_path / "ckpt"
    good, _ = published_file(ckpts, MOBILENET, seed=1)
    mislabeled = ckpts / "best_deeplabv3plus_resnet50_cityscapes_os16_seed5.pth"
    mislabeled.write_bytes(good.read_bytes())
    (ckpts / "notes.txt").write_text("not weights")
    text = ckpts / "best_deeplabv3plus_mobilenet_cityscapes_os16_seed6.pth"
    text.write_text("<html>not a checkpoint</html>")
    marker = tmp_path / "ran"
    hostile = ckpts / "best_deeplabv3plus_mobilenet_cityscapes_os16_seed7.pth"
    torch.save({"model_state": {}, "best_score": _Exploit(marker)}, hostile)
    out = tmp_path / "runs"
    cases = [
        ([mislabeled], "named deeplabv3plus_resnet50 but holds the weights of deeplabv3plus_mobilenet"),
        ([ckpts / "notes.txt"], "the name is not best_<model>"),
        ([text], "cannot read the checkpoint (not a PyTorch file)"),
        ([hostile], "refused: it holds code or objects besides tensors"),
        ([ckpts / "missing.pth"], "no such file"),
    ]
    for files, needle in cases:
        assert main(["import", *map(str, files), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
    assert not marker.exists()  # the hostile file's code never ran
    assert not out.exists()

    assert main(["import", str(good), "--out", str(out)]) == 0
    before = (out / "standard" / "seed1" / "final.json").read_bytes()
    assert main(["import", str(good), "--out", str(out)]) == 0  # the same files: done already, kept
    assert "imported already from the same files" in capsys.readouterr().out
    assert (out / "standard" / "seed1" / "final.json").read_bytes() == before
    other = ckpts / "other" / good.name
    other.parent.mkdir()
    other.write_bytes(good.read_bytes())
    assert main(["import", str(other), "--out", str(out)]) == 2  # another file for the same run: refused
    assert "holds a run or other files already" in capsys.readouterr().err
    assert (out / "standard" / "seed1" / "final.json").read_bytes() == before


def test_a_non_finite_iteration_count_is_left_out_not_a_traceback(tmp_path):
    path, _ = published_file(tmp_path / "ckpt", MOBILENET)
    data = torch.load(path, weights_only=False)
    data["cur_itrs"], data["best_score"] = float("nan"), np.float64("inf")
    torch.save(data, path)
    assert main(["import", str(path), "--out", str(tmp_path / "runs")]) == 0
    final = json.loads((tmp_path / "runs" / "standard" / "seed1" / "final.json").read_text())
    assert final["steps"] is None and final["imported"]["best_miou"] == {MOBILENET: None}


def test_a_seed_beyond_numpys_in_a_file_name_is_refused_before_anything_is_written(tmp_path, capsys):
    path, _ = published_file(tmp_path / "ckpt", MOBILENET)
    huge = path.with_name(path.name.replace("seed1", "seed100000000000000000000"))
    path.rename(huge)
    assert main(["import", str(huge), "--out", str(tmp_path / "runs")]) == 2
    assert "outside 0..4294967295; give --seed" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert main(["import", str(huge), "--out", str(tmp_path / "runs"), "--seed", "7"]) == 0


def test_an_unknown_dataset_names_the_known_ones(tmp_path, capsys):
    path, _ = published_file(tmp_path / "ckpt", MOBILENET)
    assert main(["import", str(path), "--out", str(tmp_path / "runs"), "--dataset", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "--dataset bogus: not one whose classes iwu knows (cityscapes, acdc, kvasir, voc)" in err


def test_a_published_file_as_init_from_says_to_import_it_first(tmp_path):
    from iwu.engine.checkpoint_io import read_run_checkpoint

    path, _ = published_file(tmp_path / "ckpt", MOBILENET)
    with pytest.raises(UserError, match=r"a checkpoint of the published code; turn it into a run with `iwu import"):
        read_run_checkpoint(path)


def test_an_import_killed_half_way_is_finished_by_the_same_command(tmp_path, monkeypatch, capsys):
    from iwu.interop import published

    files = [published_file(tmp_path / "ckpt", MOBILENET, seed=s)[0] for s in (1, 2)]
    out = tmp_path / "runs"
    (out / "standard" / ".seed1.importing").mkdir(parents=True)  # what a kill -9 in the first run leaves
    (out / "standard" / ".seed1.importing" / "config.yaml").write_text("half")
    write_run, calls = published._write_run, []

    def killed_in_the_second(folder, *args):
        calls.append(folder)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill between two runs
        write_run(folder, *args)

    monkeypatch.setattr(published, "_write_run", killed_in_the_second)
    assert main(["import", *map(str, files), "--out", str(out)]) == 130  # Ctrl-C's status
    assert (out / "standard" / "seed1" / "final.json").exists() and not (out / "standard" / "seed2").exists()
    monkeypatch.setattr(published, "_write_run", write_run)
    assert main(["import", *map(str, files), "--out", str(out)]) == 0
    assert "seed1: imported already" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "standard").iterdir()) == ["seed1", "seed2"]  # nothing hidden left
    assert load_models(out / "standard" / "seed2", "cpu").config.seed == 2
