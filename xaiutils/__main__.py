"""Command line: ``python -m xaiutils run NOTEBOOK --preset smoke -p NAME VALUE ... --out RUN_DIR``.

Also ``grid``, ``evaluate --method package.module:function`` (your own explanation method on the trained grid,
with a leaderboard), ``setup-weights`` and ``check-book [HTML_DIR] [--screenshots DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xaiutils.foundation.config import preset_names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m xaiutils", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="execute one notebook through papermill into a run folder")
    run.add_argument("notebook", help="a name in notebooks/ (e.g. 00_overview) or a path to a py:percent file")
    run.add_argument("--preset", default="smoke", choices=preset_names())
    run.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="override a notebook parameter; VALUE is read as YAML (3, 0.5, [1, 2], null, text)",
    )
    run.add_argument("--out", default=None, help="run folder (default: runs/<preset>/<notebook>)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace an existing run folder (only a run folder or an empty folder; anything else is "
                          "refused)")
    run.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: python3)")
    run.add_argument("--cluster", default=None, metavar="SPEC",
                     help="Dask scheduler address or cluster spec YAML, handed to the notebook's 'cluster' parameter "
                          "(notebook 4 scores on it)")

    grid = commands.add_parser("grid", help="run the fine-tuning grid (source × k × seed) through notebook 3")
    grid.add_argument("--preset", default="smoke", choices=preset_names())
    grid.add_argument("--grid-file", default=None,
                      help="YAML file with sources, n_pretrained_blocks and seeds (default: the preset's grid)")
    grid.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                      help="a notebook-3 parameter passed to every cell (e.g. -p epochs 3)")
    grid.add_argument("--out", default=None, help="grid folder (default: runs/<preset>/03_finetune/grid)")
    grid.add_argument("--workers", type=int, default=None,
                      help="cells trained at once, each with cpu_count/workers threads (default: the preset's)")
    grid.add_argument("--cluster", default=None, metavar="SPEC",
                      help="run each cell as a task on a Dask cluster: a scheduler address (tcp://host:8786) or a "
                           "cluster spec YAML (e.g. examples/slurm.yaml); --workers is then ignored")

    commands.add_parser("setup-weights", help="place torchvision's MobileNetV2 ImageNet file in the torch hub cache")
    commands.add_parser("setup-anatomy", help="unpack Debian's mricron-data (the Colin27 brain, the AAL atlas) into "
                                              "share/mricron/templates of this Python environment")

    arm = commands.add_parser(
        "pretrain-mri", help="train the in-domain (mri) arm from the preset's recipe (notebook 2's tasks on "
                             "lesion-free slices of several anatomies), choose a task by the stated rule and write "
                             "blocks.pt and card.json; --ship copies them into the package, where the book reads them")
    arm.add_argument("--preset", default="book", choices=preset_names())
    arm.add_argument("--out", default=None, help="output folder (default: runs/<preset>/pretrain-mri)")
    arm.add_argument("--data-dir", default=None,
                     help="the lesion dataset scoring the transfer runs (default: runs/<preset>/01_data/dataset)")
    arm.add_argument("--workers", type=int, default=None, help="tasks trained at once (default: the preset's)")
    arm.add_argument("--ship", action="store_true", help="copy blocks.pt and card.json into xaiutils/shipped/")
    arm.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="a pretrain setting of the preset, e.g. -p n_subjects 32 -p epochs 2")

    scoring = commands.add_parser(
        "evaluate", help="score your own explanation method(s) on the trained grid, beside the registry's methods and "
                         "the control maps; writes scores.csv, sanity.csv and leaderboard.csv")
    scoring.add_argument("--method", dest="user_methods", action=_MethodAction, default=[], required=True,
                         metavar="[NAME=]SPEC",
                         help="method(model, images, target) -> maps, as package.module:function or "
                              "path/to/file.py:function; repeat for several")
    scoring.add_argument("--setting", dest="user_methods", action=_SettingAction, nargs=2, metavar=("KEY", "VALUE"),
                         help="a keyword setting for the --method before it (VALUE read as YAML); repeatable")
    scoring.add_argument("--method-timeout", type=float, default=None, metavar="SECONDS",
                         help="seconds a method may take on one batch of images before it is stopped and refused "
                              "(default: 600); a call past 30 s is named on stderr every 30 s")
    scoring.add_argument("--preset", default="book", choices=preset_names(),
                         help="whose trained grid and explain settings to use (default: book)")
    scoring.add_argument("--grid-dir", default=None, help="grid folder (default: runs/<preset>/03_finetune/grid)")
    scoring.add_argument("--data-dir", default=None, help="dataset folder (default: runs/<preset>/01_data/dataset)")
    scoring.add_argument("--out", default=None, help="output folder (default: runs/<preset>/evaluate)")
    scoring.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                         help="an explain setting of the preset, e.g. -p methods '[saliency, sobel]' "
                              "-p n_test_images 16 -p workers 1")

    locked = commands.add_parser(
        "build-book", help="run the book build (the command after --) holding the lock of the built book, so that a "
                           "second build in the same checkout is refused at once, naming the first one's process")
    locked.add_argument("--html-dir", default="_build/html", help="the built book's folder, whose lock is taken "
                                                                 "(default: _build/html; the lock: _build/.html.lock)")
    locked.add_argument("program", nargs=argparse.REMAINDER, help="-- then the build command")

    check = commands.add_parser("check-book", help="open the built book in headless Chromium; exit 1 on blank pages, "
                                                   "missing figures or broken internal links")
    check.add_argument("html_dir", nargs="?", default="_build/html", help="the built site (default: _build/html)")
    check.add_argument("--screenshots", default=None, metavar="DIR",
                       help="folder for one PNG per page (default: screenshots/ beside HTML_DIR)")
    return parser


class _MethodAction(argparse.Action):
    """--method SPEC: a new user method entry."""

    def __call__(self, parser, namespace, value, option_string=None):
        entries = list(getattr(namespace, self.dest, None) or [])
        namespace.__dict__[self.dest] = [*entries, {"spec": value, "settings": {}}]


class _SettingAction(argparse.Action):
    """--setting KEY VALUE: a keyword setting of the --method given before it."""

    def __call__(self, parser, namespace, values, option_string=None):
        entries = getattr(namespace, self.dest, None) or []
        if not entries:
            parser.error("--setting must follow the --method it belongs to")
        from xaiutils.execution.params import parse_value

        key, value = values
        entries[-1]["settings"][key] = parse_value(value, key)


def _parameters(pairs) -> dict:
    from xaiutils.execution.params import parse_value

    return {name: parse_value(value, name) for name, value in pairs}


def _run_guarded(action) -> int:
    """Run ``action`` with SIGTERM and SIGHUP handled like Ctrl-C (temporary folders removed), and answer every
    expected failure with one line on stderr instead of a traceback."""
    from xaiutils.execution.locks import FolderBusy, Terminated, terminate_like_interrupt
    from xaiutils.execution.runner import RunNotWritten, describe_failure
    from xaiutils.foundation.files import FolderNotWritable

    try:
        try:
            with terminate_like_interrupt():
                return action()
        except KeyboardInterrupt:
            # The kernel client's background tasks, cut short, would log "Task exception was never retrieved"
            # with a DeadKernelError traceback when collected at exit: silence that logger, collect them now.
            import gc
            import logging

            logging.getLogger("asyncio").setLevel(logging.CRITICAL)
            gc.collect()
            raise
    except Terminated as stop:
        print(f"error: {stop}; the unfinished run folder was removed, nothing else changed", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("error: interrupted; the unfinished run folder was removed, nothing else changed", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, FolderBusy, FolderNotWritable) as error:
        print(f"error: {describe_failure(error)}", file=sys.stderr)
        return 2
    except RunNotWritten as error:  # a full disk while a run folder was written
        print(f"error: {describe_failure(error)}", file=sys.stderr)
        return 1
    except Exception as error:
        from papermill.exceptions import PapermillExecutionError

        if not isinstance(error, PapermillExecutionError):
            raise
        print(f"error: {describe_failure(error)}", file=sys.stderr)
        return 1


def _start_workers_early(preset: str, parameter: list) -> None:
    """When ``evaluate`` will run a pool of workers, start the fork server that makes them now: it imports torch and
    the scoring code beside this process's own imports (about 3 s less before the first run is explained on 2
    cores). Any mistake in the parameters is left to ``evaluate`` to report."""
    from xaiutils.execution.parallel import start_fork_server
    from xaiutils.foundation.config import resolve

    try:
        workers = resolve("explain", preset, **_parameters(parameter))["workers"]
        if isinstance(workers, int) and workers > 1:
            start_fork_server(workers, ("xaiutils.analysis.evaluate",))
    except Exception:  # noqa: BLE001 - reported, with its one-line message, by evaluate itself
        return


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        from xaiutils.execution.runner import run_notebook

        def run() -> int:
            parameters = _parameters(args.parameter)
            for reserved in ("preset", "out_dir"):
                if reserved in parameters:
                    raise ValueError(f"set {reserved} with --{reserved.split('_')[0]}, not -p")
            if args.cluster is not None:
                from xaiutils.execution.cluster import as_spec

                as_spec(args.cluster)  # a bad spec file is refused before the notebook starts
                parameters["cluster"] = args.cluster
            out = run_notebook(
                args.notebook,
                out_dir=args.out,
                preset=args.preset,
                parameters=parameters,
                kernel_name=args.kernel,
                overwrite=args.overwrite,
            )
            print(out)
            return 0

        return _run_guarded(run)
    if args.command == "grid":
        from xaiutils.execution.grid import read_grid_file, run_grid

        def grid() -> int:
            spec = read_grid_file(args.grid_file) if args.grid_file else None
            cluster = None
            if args.cluster is not None:
                from xaiutils.execution.cluster import as_spec

                cluster = as_spec(args.cluster)  # checked before any cell starts
            table = run_grid(args.preset, out_dir=args.out, spec=spec, parameters=_parameters(args.parameter),
                             workers=args.workers, cluster=cluster)
            print(table.to_string(index=False))
            return 0

        return _run_guarded(grid)
    if args.command == "evaluate":
        _start_workers_early(args.preset, args.parameter)
        from xaiutils.analysis.leaderboard import evaluate_methods

        def score() -> int:
            board = evaluate_methods(args.user_methods, preset=args.preset, grid_dir=args.grid_dir,
                                     data_dir=args.data_dir, out_dir=args.out, method_timeout=args.method_timeout,
                                     **_parameters(args.parameter))
            shown = [column for column in board.columns if not column.endswith(("_ci_low", "_ci_high"))]
            print(board[shown].to_string(index=False, float_format=lambda value: f"{value:.3f}"))
            from xaiutils.execution.paths import default_out_dir

            print(f"leaderboard: {Path(args.out or default_out_dir(args.preset, 'evaluate')) / 'leaderboard.csv'}")
            return 0

        return _run_guarded(score)
    if args.command == "pretrain-mri":
        def arm() -> int:
            from xaiutils.analysis import mri_arm
            from xaiutils.execution.paths import default_out_dir

            out = Path(args.out) if args.out else default_out_dir(args.preset, "pretrain-mri")
            data_dir = Path(args.data_dir) if args.data_dir else default_out_dir(args.preset, "01_data") / "dataset"
            if not data_dir.exists():
                raise FileNotFoundError(f"{data_dir} does not exist; it is made by notebook 1 (python -m xaiutils run "
                                        f"01_data --preset {args.preset}), or give --data-dir")
            card = mri_arm.pretrain_mri(args.preset, out, data_dir, workers=args.workers,
                                        **_parameters(args.parameter))
            print(json.dumps(card["selection"]["table"], indent=1))
            print(f"chosen: {card['selection']['chosen_task']}; card: {out / mri_arm.CARD_FILE}")
            if args.ship:
                print(f"shipped: {mri_arm.ship(out)}")
            return 0

        return _run_guarded(arm)
    if args.command == "setup-anatomy":
        from xaiutils.domain.mri.anatomies import install_mricron

        return _run_guarded(lambda: print(install_mricron()) or 0)
    if args.command == "setup-weights":
        from xaiutils.domain.weights import place_mobilenet_v2

        print(place_mobilenet_v2())
        return 0
    if args.command == "build-book":
        from xaiutils.execution.locks import exec_holding_lock
        from xaiutils.foundation.files import output_folder

        program = args.program[1:] if args.program[:1] == ["--"] else args.program
        # the lock goes beside the folder: '_build/html/..' is refused before it is taken
        return _run_guarded(lambda: exec_holding_lock(output_folder(args.html_dir, "--html-dir"), program))
    if args.command == "check-book":
        from xaiutils.bookcheck import main as check_book_main

        html_dir = Path(args.html_dir)
        screenshots = args.screenshots or html_dir.resolve().parent / "screenshots"
        return check_book_main(html_dir, screenshot_dir=screenshots)
    return 2


if __name__ == "__main__":
    sys.exit(main())
