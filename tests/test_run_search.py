"""Real Ray: run_search.py end to end on tiny generated data, fractional-GPU packing, resume, bad input."""

from __future__ import annotations

import json
import time

import pytest
from cli_run import one_line_error, run_cli, trial_results
from sample_data import ROOT

from search_spaces import get_space
from trainables import metric_names as M
from trainables.epoch_progress import PROGRESS_FILE

pytestmark = pytest.mark.slow


def test_smoke_test_end_to_end(lenet5_smoke):
    proc, exp = lenet5_smoke.proc, lenet5_smoke.exp
    info = json.loads((exp / "experiment.json").read_text())
    assert info["model"] == "lenet5" and info["data"]["classes"] == ["cat", "dog", "ship"]
    assert info["split_seed"] == 0 and "lr" in info["search_space"] and "ray" in info["packages"]
    results = trial_results(exp)
    assert len(results) == 2  # --smoke-test: 2 trials
    for rows in results.values():
        assert 1 <= len(rows) <= 2
        for row in rows:
            assert set(M.REPORT_KEYS) <= set(row)
    for folder in exp.glob("trial_*"):  # in-epoch progress, where the console reads it: the trial's own folder
        state = json.loads((folder / PROGRESS_FILE).read_text())
        assert state["epoch"] >= 1 and state["batch"] == state["batches"] >= 1
    first = next(iter(results.values()))[0]
    assert first["config"]["model"] == "lenet5"
    assert "Best trials by val_loss" in proc.stdout
    # the first trial is the space's DEFAULTS; the summary says whether the searcher's proposal beat it, or (on 6
    # validation images, likely) that the validation set cannot tell
    assert info["search"]["first_trial_config"]["lr"] == get_space("lenet5")[1]["lr"]
    verdict = proc.stdout.replace("\n", " ")
    assert "on 6 validation images" in verdict and any(
        v in verdict
        for v in (
            "beat its starting point: best proposed trial",
            "No difference the validation set can show: best proposed",
        )
    )


def test_fractional_gpus_pack_four_trials_on_one_gpu(tiny_arrays, tmp_path):
    """Logical GPUs (no CUDA here): 4 trials of 0.25 GPU must run at the same time on 1 GPU.

    Each trial waits at a barrier until all four have started; if Ray did not pack them, the barrier times out.
    """
    import ray
    from ray import tune

    from trainables.tune_trial import train_trial

    barrier = tmp_path / "barrier"
    barrier.mkdir()

    def probe(config, data):
        (barrier / str(config["i"])).write_text(json.dumps(ray.get_gpu_ids()))
        deadline = time.time() + 60
        while len(list(barrier.iterdir())) < 4 and time.time() < deadline:
            time.sleep(0.1)
        assert len(list(barrier.iterdir())) == 4, "trials were not co-scheduled"
        train_trial(config, data)

    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # fmt: skip
    try:
        trainable = tune.with_resources(tune.with_parameters(probe, data=tiny_arrays), {"cpu": 0.5, "gpu": 0.25})
        # device "cpu": what --train-on-cpu sets; without it a trial holding a GPU share and no CUDA fails at once
        config = dict(model="lenet5", lr=1e-3, batch_size=16, max_epochs=1, seed=0, device="cpu",
                      i=tune.grid_search([0, 1, 2, 3]))  # fmt: skip
        results = tune.Tuner(
            trainable, param_space=config, run_config=tune.RunConfig(storage_path=str(tmp_path), name="gpus")
        ).fit()
    finally:
        ray.shutdown()
    assert results.num_errors == 0, [r.error for r in results]
    assert all(r.metrics[M.VAL_ACC] >= 0 for r in results)
    assert {tuple(json.loads(p.read_text())) for p in barrier.iterdir()} == {(0,)}  # all on GPU 0


def test_unknown_model(image_folder):
    line = one_line_error(run_cli("--model", "vgg16", "--data-dir", image_folder), within=15)
    assert "vgg16" in line and "lenet5" in line and "resnet18" in line


def test_missing_data_dir(tmp_path):
    line = one_line_error(run_cli("--data-dir", tmp_path / "shared" / "absent", "--storage-path", tmp_path), within=15)
    assert "absent" in line and "does not exist" in line and "cifar-10" in line.lower()
    assert not (tmp_path / "shared").exists()  # no folder created, no download started


def test_search_runs_to_the_end_on_a_folder_of_bad_and_odd_files(tmp_path):
    from odd_images import odd_folder

    folder = odd_folder(tmp_path / "odd")
    proc = run_cli("--model", "lenet5", "--data-dir", folder, "--num-samples", 1, "--max-epochs", 1, "--subset", 30,
                   "--storage-path", tmp_path, "--name", "odd", "--num-cpus", 2)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = next(ln for ln in proc.stderr.splitlines() if ln.startswith("skipped "))
    assert counts.startswith("skipped 8 of 44 files (") and counts.endswith("full list in experiment.json")
    assert "decoding 40 images once (32x32)" in proc.stderr
    info = json.loads((tmp_path / "odd" / "experiment.json").read_text())
    assert len(info["data"]["skipped"]) == 8 and info["data"]["num_files"] == 44
    assert {s["reason"] for s in info["data"]["skipped"]} >= {"truncated", "corrupt", "AppleDouble", "too large"}
    assert info["data"]["image_size"] == 32 and info["args"]["image_size"] == 32
    (rows,) = trial_results(tmp_path / "odd").values()
    assert len(rows) == 1 and set(M.REPORT_KEYS) <= set(rows[0])  # the search ran to its end
    strict = run_cli("--data-dir", folder, "--strict-data", "--smoke-test", "--storage-path", tmp_path)
    line = one_line_error(strict, within=20)
    assert "--strict-data: 8 unusable files" in line and "train/cat/truncated.jpg (truncated)" in line


def test_empty_class_folders(tmp_path):
    for split in ("train", "test"):
        (tmp_path / "d" / split / "cat").mkdir(parents=True)
    line = one_line_error(run_cli("--data-dir", tmp_path / "d", "--storage-path", tmp_path), within=15)
    assert "no images" in line


def test_one_class_folder_and_too_small_subset_are_one_line_errors(tmp_path):
    """Issue 23.3: a one-class folder searched (`1 classes`, val_loss 0) and --subset 5 quietly became 10 images."""
    from sample_data import write_image_folder

    one = write_image_folder(tmp_path / "one", n_train=4, n_test=2)
    for split in ("train", "test"):
        for cls in ("dog", "ship"):
            for f in (one / split / cls).iterdir():
                f.unlink()
            (one / split / cls).rmdir()
    line = one_line_error(run_cli("--data-dir", one, "--storage-path", tmp_path), within=15)
    assert "has one class folder (cat); a classifier needs at least 2" in line
    three = write_image_folder(tmp_path / "three", n_train=4, n_test=2)
    line = one_line_error(run_cli("--data-dir", three, "--subset", 2, "--storage-path", tmp_path), within=15)
    assert (
        line == "error: --subset 2 is fewer training images than the 3 classes (each needs one); use --subset 3 or more"
    )


def test_gpu_request_without_gpus(image_folder, tmp_path):
    line = one_line_error(run_cli("--data-dir", image_folder, "--gpus-per-trial", 0.25, "--storage-path", tmp_path),
                          within=15)  # fmt: skip
    assert "no CUDA GPU" in line


def test_gpu_request_larger_than_any_node(image_folder, tmp_path):
    proc = run_cli("--data-dir", image_folder, "--local-gpus", 1, "--gpus-per-trial", 2, "--storage-path", tmp_path,
                   "--smoke-test")  # fmt: skip
    assert "largest: 1" in one_line_error(proc)


def test_resume_of_unknown_experiment(tmp_path):
    line = one_line_error(run_cli("--resume", "--name", "nope", "--storage-path", tmp_path), within=15)
    assert "nope" in line
