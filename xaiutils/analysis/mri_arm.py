"""The in-domain (``mri``) arm, trained once from the recipe of a preset and shipped with a card.

:func:`pretrain_mri` builds the corpus of lesion-free slices (:func:`pretrain.pretrain_corpus`), trains every
candidate task (:func:`task_selection.train_and_select`), compares each with its trivial baseline, chooses a task by
the rule stated in advance (the highest mean validation accuracy of a k = ``selection_k`` transfer run on the lesion
task, among the tasks that beat their baseline by ``baseline_margin``) and writes, in one folder:

- ``blocks.pt``: the chosen network's transferable blocks (weights only, keys ``blocks.<i>.…``);
- ``pretext_head.pt``: its pretext head (the classifier, or the dense projections), when the run saved it;
- ``card.json``: the recipe (the preset's settings), seeds, the corpus's hash, image-steps, wall time and hardware
  per task, the pretext curves, the pretext metrics against their baselines, the selection table, the chosen task
  and both files' sha256.

:func:`ship` copies both into the package (:data:`SHIPPED`), where notebook 3 and ``make book`` read them;
:func:`read_shipped` checks the file against the card's sha256 before anything uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from xaiutils.analysis import task_selection
from xaiutils.domain import models, pretrain
from xaiutils.foundation.config import resolve
from xaiutils.foundation.files import write_atomic

SHIPPED = Path(__file__).resolve().parent.parent / "shipped"
BLOCKS_FILE, CARD_FILE = "blocks.pt", "card.json"
PRETEXT_HEAD_FILE, PRETEXT_HEAD_PREFIX = task_selection.PRETEXT_HEAD_FILE, task_selection.PRETEXT_HEAD_PREFIX


class NoTaskLearned(ValueError):
    """No candidate pretext task beat its trivial baseline: there is no in-domain arm to ship."""


def shipped_dir(backbone: str, width: float) -> Path:
    """Where the shipped blocks of ``backbone`` at ``width`` live inside the package."""
    return SHIPPED / f"mri-{models.model_name(backbone, width)}"


def recipe_differences(recipe: dict, config: dict) -> list[str]:
    """How ``config`` (the ``pretrain`` settings of a preset) differs from a card's ``recipe``, one line per setting;
    empty when the shipped arm was trained with exactly these settings. ``workers`` is not compared: it changes
    where the jobs run, not what they compute."""
    def plain(value):
        return json.loads(json.dumps(value, default=str))

    keys = sorted((set(recipe) | set(config)) - {"workers"})
    return [f"{key}: shipped {plain(recipe.get(key))!r}, here {plain(config.get(key))!r}" for key in keys
            if plain(recipe.get(key)) != plain(config.get(key))]


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def corpus_hash(corpus: dict) -> str:
    """sha256 over the corpus's arrays (images, brains, bands, tissues, generation labels) and its slice table."""
    digest = hashlib.sha256()
    for key in ("images", "brains", "bands", "tissues", "labels"):
        array = np.ascontiguousarray(corpus[key])
        digest.update(f"{key}{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    digest.update(corpus["metadata"].to_csv(index=False).encode())
    return digest.hexdigest()


def choose_task(task_metrics: dict, selection_rows: list[dict]) -> tuple[str, dict]:
    """The task chosen by the rule stated in advance, and the table behind it: among the tasks whose pretext beat
    its baseline (``task_metrics[name]["beats_baseline"]``), the highest mean validation accuracy of the transfer
    runs in ``selection_rows`` (a tie goes to the task listed first). Raises :class:`NoTaskLearned` when no task
    beat its baseline."""
    table = {}
    for name, metric in task_metrics.items():
        accuracies = [row["val_accuracy"] for row in selection_rows if row["task"] == name]
        table[name] = {"mean_val_accuracy": float(np.mean(accuracies)) if accuracies else float("nan"),
                       "beats_baseline": bool(metric["beats_baseline"]), "pretext": metric["value"],
                       "baseline": metric["baseline"]["value"]}
    eligible = [name for name in task_metrics if table[name]["beats_baseline"]]
    if not eligible:
        described = "; ".join(f"{name}: {row['pretext']:.4f} against a baseline of {row['baseline']:.4f}"
                              for name, row in table.items())
        raise NoTaskLearned(f"no pre-training task beat its trivial baseline by the required margin ({described}); "
                            "there is no in-domain arm to choose")
    chosen = max(eligible, key=lambda name: (table[name]["mean_val_accuracy"], -eligible.index(name)))
    return chosen, table


def hardware() -> dict:
    import torch

    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def pretrain_mri(preset: str, out_dir, data_dir, workers: int | None = None, progress: bool = True,
                 **overrides) -> dict:
    """Train the ``mri`` arm of ``preset`` (its ``pretrain`` settings with ``overrides``) into ``out_dir`` and return
    its card. ``data_dir``: the lesion dataset whose training and validation splits score the transfer runs."""
    from xaiutils.domain.synth.dataset import load_benchmark

    config = resolve("pretrain", preset, **overrides)
    if workers is not None:
        config["workers"] = workers
    finetune_config = resolve("finetune", preset)
    tasks = list(config["candidate_tasks"]) if config["task"] == "auto" else [config["task"]]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    corpus = pretrain.pretrain_corpus(config["anatomies"], config["n_subjects"], config["slices_per_subject"],
                                      config["image_size"], n_bands=config["n_bands"], seed=config["seed"],
                                      progress=progress)
    table = corpus["metadata"]
    train_rows = np.flatnonzero(table["split"] == "train")
    val_rows = np.flatnonzero(table["split"] == "val")
    task_data = {name: pretrain.task_arrays(name, corpus, config["seed"]) for name in tasks}
    corpus_seconds = time.perf_counter() - started
    histories, task_metrics, selection_rows = task_selection.train_and_select(
        tasks, task_data, train_rows, val_rows, config, finetune_config, out_dir, data_dir, preset,
        workers=config["workers"], progress=progress)
    chosen, selection = choose_task(task_metrics, selection_rows)
    shipped = package(out_dir, chosen, config)
    card = {
        "preset": preset, "recipe": config, "finetune_for_selection": finetune_config,
        "corpus": {"anatomies": list(config["anatomies"]), "slices": len(table), "train_slices": len(train_rows),
                   "val_slices": len(val_rows), "pseudo_subjects": int(table["subject"].nunique()),
                   "sha256": corpus_hash(corpus), "seconds": round(corpus_seconds, 1),
                   "slices_per_anatomy": {name: int(count) for name, count in table["anatomy"].value_counts().items()}},
        "lesion_dataset": {"content_hash": load_benchmark(data_dir).card["content_hash"], "splits": ["train", "val"]},
        "tasks": {name: {"image_steps": histories[name]["image_steps"], "seconds": histories[name]["seconds"],
                         "epochs": histories[name]["epochs"], "best_epoch": histories[name]["best_epoch"],
                         "recalibrated": histories[name].get("recalibrated"), "metric": task_metrics[name]}
                  for name in tasks},
        "selection": {"rule": f"highest mean validation accuracy of the lesion task in a transfer run with k = "
                              f"{config['selection_k']} frozen blocks (seeds {config['selection_seeds']}), among the "
                              f"tasks that beat their trivial baseline by {config['baseline_margin']}",
                      "rows": selection_rows, "table": selection, "chosen_task": chosen},
        "hardware": hardware(), "wall_seconds": round(time.perf_counter() - started, 1),
        **shipped,
    }
    write_atomic(out_dir / CARD_FILE, json.dumps(card, indent=1, default=_plain).encode())
    return card


def package(out_dir, chosen: str, config: dict) -> dict:
    """Write the files that are shipped from the folder of the chosen task (``tasks/<chosen>/``): ``blocks.pt``,
    the transferable blocks alone, and ``pretext_head.pt``, the pretext's own head (the classifier, or the dense
    projections), with which the pretext can be checked again on new slices. Returns the card's sections for
    them (file, sha256, keys)."""
    out_dir, task_dir = Path(out_dir), Path(out_dir) / "tasks" / chosen
    state = models.load_weights(task_dir / "model.pt")
    blocks = {key: value for key, value in state.items() if key.startswith("blocks.")}
    models.save_state(blocks, out_dir / BLOCKS_FILE)
    sections = {"blocks": {"file": BLOCKS_FILE, "sha256": sha256_of(out_dir / BLOCKS_FILE), "keys": len(blocks),
                           "model": models.model_name(config["backbone"], config["width"])},
                "pretext_head": None}
    if (task_dir / PRETEXT_HEAD_FILE).is_file():
        head = models.load_weights(task_dir / PRETEXT_HEAD_FILE)
    elif pretrain.TASK_KINDS[chosen] == "classification":  # written before the head had a file of its own
        head = {f"{PRETEXT_HEAD_PREFIX}{key[len('head.'):]}": value for key, value in state.items()
                if key.startswith("head.")}
    else:  # a dense head of a run made before heads were saved: the blocks alone are shipped
        return sections
    models.save_state(head, out_dir / PRETEXT_HEAD_FILE)
    sections["pretext_head"] = {"file": PRETEXT_HEAD_FILE, "sha256": sha256_of(out_dir / PRETEXT_HEAD_FILE),
                                "keys": len(head), "task": chosen, "kind": pretrain.TASK_KINDS[chosen]}
    return sections


def pretext_network(folder, card: dict):
    """The chosen pretext network of a shipped folder, rebuilt in eval mode from ``blocks.pt`` and
    ``pretext_head.pt``: the classifier (level band) or a :class:`pretrain.DenseHead` on the backbone."""
    if not card.get("pretext_head"):
        raise FileNotFoundError(f"{Path(folder) / CARD_FILE} ships no pretext head: its run did not save it; train the "
                                "arm again with `python -m xaiutils pretrain-mri`")
    recipe, task = card["recipe"], card["pretext_head"]["task"]
    net = models.build_model(recipe["backbone"], n_classes=pretrain.n_outputs(task, recipe["n_bands"]),
                             width=recipe["width"])
    blocks = models.load_weights(Path(folder) / BLOCKS_FILE)
    head = {key[len(PRETEXT_HEAD_PREFIX):]: value
            for key, value in models.load_weights(Path(folder) / PRETEXT_HEAD_FILE).items()}
    rest = {key: value for key, value in net.state_dict().items() if not key.startswith(("blocks.", "head."))}
    if pretrain.TASK_KINDS[task] == "classification":
        models.load_state_checked(net, {**blocks, **rest, **{f"head.{key}": value for key, value in head.items()}},
                                  f"the shipped {task} network")
        return net.eval()
    models.load_state_checked(net, {**blocks, **rest, **{key: value for key, value in net.state_dict().items()
                                                         if key.startswith("head.")}}, f"the shipped {task} blocks")
    dense = pretrain.DenseHead(net, pretrain.n_outputs(task), recipe["image_size"], residual=task == "restoration")
    models.load_state_checked(dense.projections, head, f"the shipped {task} head")
    return dense.eval()


def check_pretext(folder, card: dict, n_subjects: int = 2, seed: int = 7) -> dict:
    """The shipped pretext network's metric on the slices of ``n_subjects`` *new* pseudo-subjects of each anatomy
    of the recipe (drawn with ``seed``, not the recipe's), against the task's trivial baseline on the same slices:
    what the card says, checked again without training. Returns ``{"task", "metric", "value", "baseline",
    "beats_baseline", "slices"}`` (``beats_baseline`` by the recipe's margin)."""
    from xaiutils.domain import train

    recipe = card["recipe"]
    if seed == recipe["seed"]:
        raise ValueError(f"seed {seed} is the recipe's own: give another, so that the slices are new")
    network = pretext_network(folder, card)
    task = card["pretext_head"]["task"]
    corpus = pretrain.pretrain_corpus(recipe["anatomies"], n_subjects, recipe["slices_per_subject"],
                                      recipe["image_size"], n_bands=recipe["n_bands"], seed=seed, progress=False)
    inputs, targets = pretrain.task_arrays(task, corpus, seed)
    baseline = pretrain.task_baseline(task, inputs, targets)  # inside the brain: targets > 0, as in training
    if pretrain.TASK_KINDS[task] == "classification":
        value = train.classification_metrics(targets, train.predict_proba(network, inputs))["accuracy"]
    else:
        value = pretrain.dense_scores(network, train.as_tensor_images(inputs), pretrain.dense_targets(task, targets),
                                      task)[1]
    return {"task": task, "metric": baseline["metric"], "value": float(value), "baseline": baseline["value"],
            "beats_baseline": pretrain.beats_baseline(float(value), baseline, recipe["baseline_margin"]),
            "slices": len(inputs)}


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} into the card")


def ship(run_dir, destination=None) -> Path:
    """Copy ``blocks.pt`` and ``card.json`` of a :func:`pretrain_mri` folder into the package, after checking the
    file against the card's sha256."""
    run_dir = Path(run_dir)
    card = read_card(run_dir)
    destination = Path(destination) if destination is not None else shipped_dir(
        card["recipe"]["backbone"], card["recipe"]["width"])
    destination.mkdir(parents=True, exist_ok=True)
    names = [card[section]["file"] for section in ("blocks", "pretext_head") if card.get(section)]
    for name in [*names, CARD_FILE]:  # the card last: it describes the others
        write_atomic(destination / name, (run_dir / name).read_bytes())
    return destination


def read_card(folder) -> dict:
    """The card of a folder holding ``blocks.pt`` and ``card.json``; refused, naming both hashes, when the weights
    file is not the one the card describes."""
    folder = Path(folder)
    for name in (CARD_FILE, BLOCKS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} does not exist; the mri arm is made by `python -m xaiutils "
                                    "pretrain-mri` (see notebook 2)")
    card = json.loads((folder / CARD_FILE).read_text())
    for section in ("blocks", "pretext_head"):
        if not card.get(section):
            continue
        path = folder / card[section]["file"]
        found = sha256_of(path)
        if found != card[section]["sha256"]:
            raise ValueError(f"{path} has sha256 {found}, but its card {folder / CARD_FILE} describes "
                             f"{card[section]['sha256']}: the weights were changed or damaged; restore them from git "
                             "or retrain with `python -m xaiutils pretrain-mri`")
    return card
