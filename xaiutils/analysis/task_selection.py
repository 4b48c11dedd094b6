"""Notebook 2's work: pre-train the backbone on each candidate MRI task, then score each task by a transfer run.

Each task is trained (:func:`train_task`) and then scored by lesion-task transfer runs with its leading blocks
frozen (:func:`transfer_accuracy`, validation split only). :func:`train_and_select` runs both, for every task,
here or in ``workers`` processes at once; a transfer run starts as soon as its task's checkpoint exists.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from xaiutils.domain import models, pretrain, train
from xaiutils.domain.synth.dataset import load_benchmark
from xaiutils.execution import parallel
from xaiutils.execution.parallel import check_workers
from xaiutils.execution.run_record import RunRecord

PRETEXT_HEAD_FILE, PRETEXT_HEAD_PREFIX = "pretext_head.pt", "pretext_head."


def train_task(name: str, inputs: np.ndarray, targets: np.ndarray, train_rows, val_rows, config: dict,
               task_dir, preset: str, progress: bool = True) -> tuple[dict, dict]:
    """Pre-train a fresh backbone on task ``name`` and write it to ``task_dir`` (``model.pt``, ``model.json``).

    Classification tasks train the backbone's own head, dense tasks a :class:`pretrain.DenseHead`; BatchNorm
    statistics are re-estimated over the training slices afterwards. Returns ``(history, metric)``, the metric
    being the task's own validation figure (``{"metric", "value", "chance"}``).
    """
    # one seeded stream: the backbone's weights, then (dense tasks) the dense head's
    torch.manual_seed(config["seed"])
    net = models.build_model(config["backbone"], n_classes=pretrain.n_outputs(name, config["n_bands"]),
                             width=config["width"])
    fit_args = {"epochs": config["epochs"], "lr": config["lr"], "batch_size": config["batch_size"],
                "patience": config["patience"], "seed": config["seed"], "lr_schedule": config["lr_schedule"],
                "progress": progress}
    train_data, val_data = (inputs[train_rows], targets[train_rows]), (inputs[val_rows], targets[val_rows])
    baseline = pretrain.task_baseline(name, *val_data)
    if pretrain.TASK_KINDS[name] == "classification":
        history = train.fit(net, train_data, val_data, augment="flips", **fit_args)

        def score(model):
            probabilities = train.predict_proba(model, val_data[0])
            chosen = probabilities[np.arange(len(val_data[1])), val_data[1]]
            accuracy = train.classification_metrics(val_data[1], probabilities)["accuracy"]
            return float(-np.log(np.clip(chosen, 1e-12, 1.0)).mean()), accuracy

        calibration = train.recalibrate_if_better(net, train_data[0], score, config["batch_size"])
        accuracy = calibration[calibration["kept"]][1]
        history["recalibrated"] = {"val_loss": calibration[calibration["kept"]][0], "val_metric": accuracy,
                                   "statistics": calibration["kept"], "running": calibration["running"],
                                   "exact": calibration["recalibrated"]}
        metric = {"metric": "validation accuracy", "value": accuracy, "chance": 1 / config["n_bands"]}
    else:
        dense = pretrain.DenseHead(net, pretrain.n_outputs(name), config["image_size"],
                                   residual=name == "restoration")
        history = pretrain.fit_dense(dense, train_data, val_data, name, **fit_args)
        best = history["recalibrated"]["val_metric"]
        if pretrain.TASK_KINDS[name] == "segmentation":
            metric = {"metric": "validation pixel accuracy in the brain", "value": best, "chance": None}
        else:
            metric = {"metric": f"validation mean absolute error (corrupted input: {baseline['value']:.3f})",
                      "value": best, "chance": None}
    metric["baseline"] = baseline
    metric["beats_baseline"] = pretrain.beats_baseline(metric["value"], baseline, config.get("baseline_margin", 0.0))
    history["image_steps"] = len(history["epochs"]) * len(train_data[0])
    model_config = {**config, "task": name, "model": models.model_name(config["backbone"], config["width"]),
                    "n_classes": pretrain.n_outputs(name, config["n_bands"]), "preset": preset}
    RunRecord(model_config, history, {"val": metric}).write(task_dir, net)
    # the pretext's own head (the classifier, or the dense projections), so that the pretext can be checked again
    head = net.head if pretrain.TASK_KINDS[name] == "classification" else dense.projections
    models.save_state({f"{PRETEXT_HEAD_PREFIX}{key}": value for key, value in head.state_dict().items()},
                      Path(task_dir) / PRETEXT_HEAD_FILE)
    return history, metric


def transfer_accuracy(checkpoint, data_dir, finetune_config: dict, n_pretrained_blocks: int, seed: int) -> dict:
    """Validation accuracy on the lesion task of a transfer run whose first ``n_pretrained_blocks`` blocks come
    from ``checkpoint`` and stay frozen, trained on the training split with the fine-tuning settings of notebook 3.
    The test split is never read."""
    bench = load_benchmark(data_dir)
    split = {name: bench.indices(name) for name in ("train", "val")}
    model = models.prepare_model(
        finetune_config["backbone"], "mri", n_pretrained_blocks, mode=finetune_config["mode"],
        width=finetune_config["width"], dropout=finetune_config["dropout"], seed=seed, mri_checkpoint=checkpoint,
    )
    history = train.fit(
        model, (bench.images[split["train"]], bench.labels[split["train"]]),
        (bench.images[split["val"]], bench.labels[split["val"]]), epochs=finetune_config["epochs"],
        lr=finetune_config["lr"], batch_size=finetune_config["batch_size"], patience=finetune_config["patience"],
        weight_decay=finetune_config["weight_decay"], seed=seed, augment=finetune_config["augment"],
        lr_schedule=finetune_config["lr_schedule"], progress=False,
        transferred_lr_factor=finetune_config.get("transferred_lr_factor", 1.0),
    )
    val_accuracy = train.classification_metrics(
        bench.labels[split["val"]], train.predict_proba(model, bench.images[split["val"]]))["accuracy"]
    return {"seed": seed, "val_accuracy": val_accuracy, "seconds": history["seconds"]}


def train_and_select(tasks, task_data: dict, train_rows, val_rows, config: dict, finetune_config: dict, out_dir,
                     data_dir, preset: str, workers: int = 1, progress: bool = True):
    """Train every task of ``tasks`` (``task_data[name] = (inputs, targets)``) into ``out_dir/tasks/<name>``, then
    score each by :func:`transfer_accuracy` at ``config["selection_k"]`` for every seed of
    ``config["selection_seeds"]``.

    Returns ``(histories, task_metrics, selection_rows)``, the rows in task order, then seed order. With
    ``workers > 1`` the jobs run in that many processes, each with ``cpu_count // workers`` threads; a task's
    transfer runs are queued as soon as its checkpoint is written. Every job is seeded by its own parameters, so
    the results do not depend on ``workers`` beyond the rounding of threaded kernels.
    """
    workers = check_workers(workers)
    task_dirs = {name: Path(out_dir) / "tasks" / name for name in tasks}
    seeds = list(config["selection_seeds"])
    histories, task_metrics, transfers = {}, {}, {}
    bar = tqdm(total=len(tasks) * (1 + len(seeds)), desc="pre-training and transfer runs", disable=not progress)

    def transfer_jobs(name):
        return [((name, seed), transfer_accuracy, (task_dirs[name] / "model.pt", str(data_dir), finetune_config,
                                                   config["selection_k"], seed)) for seed in seeds]

    if workers == 1:
        for name in tasks:
            histories[name], task_metrics[name] = train_task(name, *task_data[name], train_rows, val_rows, config,
                                                             task_dirs[name], preset, progress)
            bar.update()
            for key, function, args in transfer_jobs(name):
                transfers[key] = function(*args)
                bar.update()
    else:
        with parallel.process_pool(workers) as pool:
            pending = {pool.submit(train_task, name, *task_data[name], train_rows, val_rows, config,
                                   task_dirs[name], preset, False): ("train", name) for name in tasks}
            with parallel.cancel_on_error(pending):
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        kind, key = pending.pop(future)
                        if kind == "train":
                            histories[key], task_metrics[key] = future.result()
                            pending.update({pool.submit(function, *args): ("transfer", job_key)
                                            for job_key, function, args in transfer_jobs(key)})
                        else:
                            transfers[key] = future.result()
                        bar.update()
    bar.close()
    selection_rows = [{"task": name, **transfers[(name, seed)]} for name in tasks for seed in seeds]
    return histories, task_metrics, selection_rows
