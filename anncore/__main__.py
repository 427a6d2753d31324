"""The one command line: ``python -m anncore <command>``; ``python -m anncore --help`` lists the commands.

Each command's function imports what it runs inside it, so ``--help`` and a command stay fast and a command needs
only its own optional dependencies (``bench --suite explorer`` the course extra, ``train`` none); size (~450 lines):
the parser of every command and its flags.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from anncore.errors import BadInput, MissingInput, OutputInUse


def _info(args: argparse.Namespace) -> int:
    from anncore.analysis.environment import environment_report

    report = environment_report(args.device)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        width = max(len(key) for key in report)
        for key, value in report.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _course(args: argparse.Namespace) -> int:
    from anncore.course.runner import CourseInterrupted, run_course

    try:
        rows = run_course(
            Path(args.notebooks), Path(args.params), Path(args.out), args.in_place, args.only, args.keep_going,
            args.cell_timeout,
        )  # fmt: skip
    except CourseInterrupted as err:
        print(err, file=sys.stderr)
        return 130  # the shell's status for SIGINT
    return 0 if all(row["status"] == "ok" for row in rows) else 1


def _bench(args: argparse.Namespace) -> int:
    from anncore.analysis.bench import EXPLORER_NEEDS, BenchConfig, format_ratios, format_results, write_documents

    names = ("sizes", "dtypes", "modes", "channels", "memory_format", "repeats", "warmup", "threads")
    overrides = {name: getattr(args, name) for name in names}
    config = BenchConfig.for_suite(args.suite, args.device, args.quick, **overrides)
    if config.suite == "explorer":
        try:
            from anncore.course.explorer_bench import format_explorer, run_explorer
        except ModuleNotFoundError as err:
            if (err.name or "").split(".")[0] == "anncore":
                raise
            raise BadInput(f"{EXPLORER_NEEDS} ({err.name} is missing)") from err
        documents, tables = run_explorer(config), [format_explorer]
    else:
        from anncore.analysis.bench import run_suite

        documents = run_suite(config)
        tables = [format_results, format_ratios] if config.suite == "paper" else [format_results]
    paths = write_documents(documents, Path(args.out))
    for document in documents:
        print("\n".join(table(document) for table in tables), end="\n\n")
    for path in paths:
        print(f"wrote {path}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from anncore.engine.train import main as train_main

    return train_main(args.train_args)


def _synth(args: argparse.Namespace) -> int:
    from anncore.data.root import SyntheticSet
    from anncore.data.synthetic import write_synthetic_cityscapes

    out = args.out or SyntheticSet(args.train, args.val, args.height, args.width, args.seed, args.cue_variant).root
    limit = {} if args.max_side is None else {"max_side": args.max_side}
    root = write_synthetic_cityscapes(
        out, args.train, args.val, args.height, args.width, args.seed, cue_variant=args.cue_variant, **limit
    )
    variant = "" if args.cue_variant == "boards" else f", cue variant {args.cue_variant}"
    print(f"synthetic Cityscapes: {args.train} train + {args.val} val images ({args.height}x{args.width}{variant}) "
          f"in {root}")  # fmt: skip
    return 0


def _check_data(args: argparse.Namespace) -> int:
    from anncore.data import CityscapesSegmentation
    from anncore.data.cityscapes import check_data
    from anncore.data.root import resolve_data_root

    root = resolve_data_root(args.data_root)
    datasets = [CityscapesSegmentation(root, split) for split in args.splits]
    check_data(datasets)
    counted = ", ".join(f"{len(dataset)} {dataset.split}" for dataset in datasets)
    print(f"{root}: every image and label decodes ({counted})")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from anncore.engine.evaluate import inference_config, run_evaluation

    config = inference_config(args.preset, args.scales, args.flip, args.crop, args.stride)
    result = run_evaluation(
        Path(args.checkpoint),
        args.data_root,
        Path(args.out),
        args.split,
        config,
        args.device,
        args.save_predictions,
        args.limit,
        args.overwrite,
    )
    print(
        f"mIoU {result.metrics['miou']:.4f}  pixel accuracy {result.metrics['pixel_acc']:.4f}  "
        f"({result.images} images) -> {Path(args.out) / 'metrics.json'}"
    )
    return 0


def refuse_existing(path: Path, what: str, overwrite: bool) -> None:
    """A command's single output file is never replaced unless the user says so (``--overwrite``)."""
    if path.exists() and not overwrite:
        raise OutputInUse(f"{what} {path} exists; choose another file, or pass --overwrite to replace it")


def _cue(args: argparse.Namespace) -> int:
    from anncore.analysis.cue import VEHICLES, board_swap, cue_settings
    from anncore.device import pick_device
    from anncore.files import write_json
    from anncore.models.loading import load_model, resolve_checkpoint

    if args.json:
        refuse_existing(Path(args.json), "--json", args.overwrite)  # before the test, not after its minutes
    checkpoint = resolve_checkpoint(args.checkpoint)
    device = pick_device(args.device)
    model = load_model(checkpoint, map_location=device)
    settings = cue_settings(checkpoint, args.scenes, args.size, args.seed)
    result = board_swap(model, device=device, **settings)
    per_cue = "  ".join(f"{name} {result.follow_rate_per_cue[name]:.3f}" for name in VEHICLES)
    height, width = settings["size"]
    print(
        f"board-swap test of {checkpoint}: {result.scenes} validation scenes at {height}x{width} (data seed "
        f"{settings['seed']}), each with every board; chance 0.333"
    )
    print(f"follow rate per board: {per_cue}")
    print(f"follow rate: {result.follow_rate:.3f}")
    if args.json:
        document = {"checkpoint": str(checkpoint), "size": [height, width], "seed": settings["seed"],
                    **result.as_dict()}  # fmt: skip
        print(f"-> {write_json(document, args.json)}")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from anncore.analysis.ablation import run_ablation, write_ablation
    from anncore.engine.config import load_config

    base = load_config(args.config, out=str(args.out), **({"iters": args.iters} if args.iters else {}))
    document = run_ablation(base, Path(args.out), args.heads, args.seeds, jobs=args.jobs, overwrite=args.overwrite)
    for head, entry in document["summary"].items():
        follow = entry["follow_rate"]
        spread = "" if follow["sd"] is None else f" ± {follow['sd']:.3f}"
        shown = "n/a" if follow["mean"] is None else f"{follow['mean']:.3f}{spread}"
        print(f"{head:>5}: mIoU {entry['miou']['mean']:.3f}  board-swap follow rate {shown}  "
              f"({len(entry['seeds'])} seeds)")  # fmt: skip
    print(write_ablation(document, args.json_dir or args.out))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from anncore.models.convert import convert_checkpoint

    refuse_existing(Path(args.dst), "the output file", args.overwrite)
    config = convert_checkpoint(Path(args.src), args.source, Path(args.dst), align_corners=args.align_corners)
    aux = f"aux head {config['aux_width']} wide" if config["aux"] else "no aux head"
    print(
        f"{args.dst}: ANN on {config['backbone']} ({config['stem']} stem), {aux}, {config['num_classes']} classes, "
        f"input {config['input_norm']}, align_corners {config['align_corners']} (from the {args.source} file "
        f"{args.src}); load it with load_model or --checkpoint"
    )
    return 0


def _explore(args: argparse.Namespace) -> int:
    from anncore.course.explore import explore_photos

    limit = {} if args.max_cells is None else {"max_cells": args.max_cells}
    written = explore_photos(
        args.checkpoint,
        args.photos,
        args.out,
        args.cells,
        args.device,
        args.max_side,
        **limit,
        overwrite=args.overwrite,
    )
    print(f"{len(written)} figures of where the query pixels look, in {args.out}")
    return 0


def _exercises(args: argparse.Namespace) -> int:
    from anncore.course.exercises import write_exercise_copies

    written, kept = write_exercise_copies(args.notebooks, args.out)
    print(f"{len(written)} blank copies of the notebooks to work the exercises in, in {args.out}")
    if kept:
        print(f"{len(kept)} kept as they were (your work; delete a file to get a blank one): {kept[0].name}, ...")
    return 0


#: The run files ``export`` copies beside ``model.pt``.
RUN_COPIES = ("log.jsonl", "metrics.json", "config.yaml")


def _export(args: argparse.Namespace) -> int:
    import shutil

    from anncore.models.loading import export_model
    from anncore.outputs import fresh_output

    source = Path(args.checkpoint)
    with fresh_output(args.out, "--out", args.overwrite, ("model.pt", *RUN_COPIES)) as out:
        model = export_model(source, out / "model.pt")
        copied = [name for name in RUN_COPIES if (source.parent / name).is_file()]
        for name in copied:
            shutil.copyfile(source.parent / name, out / name)
    print(f"{model} ({model.stat().st_size / 2**20:.1f} MiB, weights only) and {', '.join(copied) or 'no run files'}")
    return 0


#: The GPU check, a harness beside the benchmark results it writes rather than library code.
GPU_CHECK = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def gpu_check_module() -> ModuleType:
    """``benchmarks/gpu_check.py`` of this checkout as the module ``gpu_check`` (loaded once)."""
    if "gpu_check" in sys.modules:
        return sys.modules["gpu_check"]
    if not GPU_CHECK.is_file():
        raise MissingInput(f"gpu-check runs {GPU_CHECK} of a checkout of the repository, and it is not there")
    spec = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def _gpu_check(args: argparse.Namespace) -> int:
    check = gpu_check_module()
    if args.step:  # one step, in the subprocess the check starts for it
        return check.run_step(args.step, Path(args.out), args.limit_s, args.dry_run, args.work)
    return check.run_check(Path(args.out), args.budget_s, args.dry_run, args.only)


#: ``--overwrite`` of the commands that write a folder (:func:`anncore.outputs.fresh_output`).
OVERWRITE_HELP = "replace what an earlier run wrote in --out (never a file anncore did not write)"


def build_parser() -> argparse.ArgumentParser:
    from anncore import __version__

    parser = argparse.ArgumentParser(
        prog="python -m anncore",
        description="Asymmetric Non-local Neural Networks (ICCV 2019): blocks, data, training, benchmarks.",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--version", action="version", version=f"anncore {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    info = commands.add_parser("info", help="versions, the device 'auto' picks, available SDPA backends")
    info.add_argument("--device", default="auto", help="device to report on (default: auto)")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(run=_info)

    course = commands.add_parser("course", help="execute every notebook headless with papermill (the main job)")
    course.add_argument("--notebooks", default="notebooks", help="folder of NN_slug.ipynb notebooks")
    course.add_argument("--params", default="params", help="folder of NN_slug.yaml papermill parameter files")
    course.add_argument("--out", default="runs", help="runs/<timestamp>/ is created under this folder")
    course.add_argument("--only", nargs="+", metavar="NN", help="run only notebooks whose name starts with these")
    course.add_argument(
        "--in-place", action="store_true", help="re-execute the committed notebooks (default parameters) in place"
    )
    course.add_argument(
        "--keep-going", action="store_true",
        help="after a notebook fails, run the rest anyway (default: stop, listing them as skipped)",
    )  # fmt: skip
    course.add_argument(
        "--cell-timeout", type=int, metavar="S", help="fail a notebook whose cell runs longer than S seconds"
    )
    course.set_defaults(run=_course)

    # Its flags live in anncore.engine.train (one per TrainConfig field) and are parsed there, so `--help` here stays
    # free of torch imports; prefix_chars="+" makes this parser hand every `--flag` through untouched.
    train = commands.add_parser(
        "train", help="train ANN or a baseline (python -m anncore train --help)", add_help=False, prefix_chars="+"
    )
    train.add_argument("train_args", nargs=argparse.REMAINDER)
    train.set_defaults(run=_train)

    bench = commands.add_parser("bench", help="measured FLOPs, memory and time of non-local vs APNB (cost curves)")
    bench.add_argument(
        "--suite",
        choices=("paper", "sweep", "explorer"),
        default="sweep",
        help="paper protocol, N sweep, or the attention explorer's slider moves (its --sizes are image sizes)",
    )
    bench.add_argument("--quick", action="store_true", help="tiny sizes, channels, one thread: proves it works")
    bench.add_argument("--device", default="auto", help="device to measure on (default: auto)")
    bench.add_argument("--sizes", nargs="+", metavar="HxW", help="feature-map sizes (default: the suite's)")
    bench.add_argument("--dtypes", nargs="+", choices=("float32", "bfloat16", "float16"), help="one JSON per dtype")
    bench.add_argument("--modes", nargs="+", choices=("forward", "forward+backward"), help="what one call runs")
    bench.add_argument("--channels", type=int, help="block input/output channels (paper 2048, sweep 512)")
    bench.add_argument("--memory-format", choices=("contiguous", "channels_last"), help="of input and weights")
    bench.add_argument("--repeats", type=int, help="timed calls per figure; the median is reported")
    bench.add_argument("--warmup", type=int, help="untimed calls before measuring")
    bench.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's; 1 on a shared machine)")
    bench.add_argument("--out", default="benchmarks/results", help="folder for the JSON results")
    bench.set_defaults(run=_bench)

    synth = commands.add_parser("synth", help="write a synthetic data set in the exact Cityscapes layout")
    synth.add_argument(
        "--out",
        help="output folder (default: where the data-root rule looks for these settings: under $ANNCORE_DATA, "
        "else data/generated/ of the checkout)",
    )
    synth.add_argument("--train", type=int, default=40, help="train images (default: 40)")
    synth.add_argument("--val", type=int, default=10, help="val images (default: 10)")
    synth.add_argument("--height", type=int, default=256, help="image height (default: 256; real Cityscapes 1024)")
    synth.add_argument("--width", type=int, default=512, help="image width (default: 512; real Cityscapes 2048)")
    synth.add_argument("--seed", type=int, default=0, help="the set is a function of this seed (default: 0)")
    synth.add_argument(
        "--max-side", type=int, help="largest --height/--width accepted (default 8192; about 100 bytes per pixel)"
    )
    synth.add_argument(
        "--cue-variant",
        default="boards",
        help="how the cue board shows the vehicle class: boards (default: colour and stripe count) or stripes (one "
        "colour, equal white area, stripe count only; params/afnb_variant.yaml, train's --synthetic-cue)",
    )
    synth.set_defaults(run=_synth)

    check = commands.add_parser("check-data", help="decode every image and label once, listing every bad file")
    check.add_argument("--data-root", help="Cityscapes root; default: $CITYSCAPES_DATASET, else the synthetic set")
    check.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to check (default: train val)")
    check.set_defaults(run=_check_data)

    evaluate = commands.add_parser("evaluate", help="whole / sliding / multi-scale+flip evaluation of a checkpoint")
    evaluate.add_argument("--checkpoint", required=True, help="OUT/checkpoint.pt written by `train`")
    evaluate.add_argument(
        "--data-root",
        help="Cityscapes root (leftImg8bit/, gtFine/), or 'synthetic'; default: $CITYSCAPES_DATASET, else synthetic",
    )
    evaluate.add_argument("--split", default="val", help="split to evaluate (default: val)")
    evaluate.add_argument("--out", required=True, help="folder for metrics.json (and predictions/)")
    evaluate.add_argument("--preset", choices=["whole", "slide769", "official-test"], help="inference preset")
    evaluate.add_argument("--scales", type=float, nargs="+", help="image scales, e.g. 0.75 1.0 1.25")
    evaluate.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help="add flipped views")
    evaluate.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="sliding-window size")
    evaluate.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"), help="sliding-window stride")
    evaluate.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, mps")
    evaluate.add_argument("--save-predictions", action="store_true", help="label-id PNGs + colour overlays")
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N images")
    evaluate.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier evaluation's files in --out (never files anncore did not write)",
    )
    evaluate.set_defaults(run=_evaluate)

    cue = commands.add_parser("cue", help="board-swap test: does a model read the synthetic set's distant cue?")
    cue.add_argument("--checkpoint", required=True, help="a training checkpoint, or 'course' for the shipped model")
    cue.add_argument("--scenes", type=int, default=30, help="validation scenes, each rendered with every board")
    cue.add_argument("--seed", type=int, help="data seed of the synthetic set (default: the model's training set)")
    cue.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="scene size (default: the training set's)")
    cue.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, mps")
    cue.add_argument("--json", metavar="FILE", help="also write the result (key follow_rate) to this JSON file")
    cue.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    cue.set_defaults(run=_cue)

    export = commands.add_parser("export", help="a checkpoint's model alone (no optimiser state), with its run files")
    export.add_argument("--checkpoint", required=True, help="OUT/checkpoint.pt written by `train`")
    export.add_argument("--out", required=True, help="folder: model.pt, and log.jsonl, metrics.json, config.yaml")
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier export's files in --out (never files anncore did not write)",
    )
    export.set_defaults(run=_export)

    convert = commands.add_parser(
        "convert", help="an official MendelXu/ANN or mmsegmentation ANN checkpoint, as a model"
    )
    convert.add_argument("--from", dest="source", required=True, choices=("official", "mmseg"), help="who saved SRC")
    convert.add_argument("src", help="the checkpoint file as published (.pth)")
    convert.add_argument("dst", help="the model file to write (load_model / --checkpoint read it)")
    convert.add_argument(
        "--align-corners", action=argparse.BooleanOptionalAction, default=None,
        help="override the upsampling's align_corners (default: official True; mmseg from the file's config)",
    )  # fmt: skip
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    convert.set_defaults(run=_convert)

    explore = commands.add_parser("explore", help="the attention explorer's figures for your own photos")
    explore.add_argument("--checkpoint", required=True, help="'course', a training checkpoint or a converted model")
    explore.add_argument("photos", nargs="+", help="image files (JPEG, PNG, ...), e.g. street photos")
    explore.add_argument("--out", required=True, help="folder for the figures")
    explore.add_argument("--cells", type=int, default=2, help="N: N x N query cells per block (default 2)")
    explore.add_argument(
        "--max-cells", type=int, help="largest --cells accepted (default 16: N x N figures per block and photo)"
    )
    explore.add_argument("--max-side", type=int, default=2048, help="longer side of the photo fed (default 2048)")
    explore.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, mps")
    explore.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier exploration's figures in --out (never files anncore did not write)",
    )
    explore.set_defaults(run=_explore)

    exercises = commands.add_parser(
        "exercises", help="copies of the notebooks, outputs cleared, to work the exercises in (yours are kept)"
    )
    exercises.add_argument("--notebooks", default="notebooks", help="folder of NN_slug.ipynb notebooks")
    exercises.add_argument("--out", default="exercises", help="folder for the copies (git-ignored: exercises/)")
    exercises.set_defaults(run=_exercises)

    ablate = commands.add_parser("ablate", help="train fcn/nl/apnb/ann for several seeds, one JSON document")
    ablate.add_argument(
        "--config", required=True, help="TrainConfig YAML every run shares (e.g. params/course_model.yaml)"
    )
    ablate.add_argument("--heads", nargs="+", default=["fcn", "nl", "apnb", "ann"], help="heads to train")
    ablate.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds per head")
    ablate.add_argument("--out", required=True, help="runs go to OUT/<head>/seed<s>/, the document into OUT")
    ablate.add_argument("--json-dir", help="write the document here instead of OUT (e.g. benchmarks/results)")
    ablate.add_argument("--iters", type=int, help="override the config's iterations")
    ablate.add_argument("--jobs", type=int, default=1, help="runs trained at a time (cpu_count // jobs threads each)")
    ablate.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    ablate.set_defaults(run=_ablate)

    gpu = commands.add_parser(
        "gpu-check", help="timed GPU benchmarks and checks on a CUDA machine: every result as JSON, a summary"
    )
    gpu.add_argument("--out", required=True, help="folder for the JSON results, logs and executed notebooks")
    gpu.add_argument("--budget-s", type=float, default=540.0, help="wall time for all steps (default 540)")
    gpu.add_argument("--dry-run", action="store_true", help="the same steps on the CPU at tiny sizes (seconds)")
    gpu.add_argument("--only", nargs="+", metavar="STEP", help="run only these steps (env paper sweep ann-inference "
                     "ann-train compile resume ddp notebooks)")  # fmt: skip
    gpu.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one step in this process
    gpu.add_argument("--limit-s", type=float, default=60.0, help=argparse.SUPPRESS)
    gpu.add_argument("--work", help=argparse.SUPPRESS)
    gpu.set_defaults(run=_gpu_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A user's mistake (:class:`~anncore.errors.UserError`) or the file system's refusal (a missing
    file, no permission, a full disk) prints one line naming what to fix and exits with status 2, as argparse does
    for bad flags; any other exception is a bug and keeps its traceback. ``--debug`` shows the traceback of all."""
    from anncore.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (UserError, OSError) as err:
        if args.debug:
            raise
        print(
            f"python -m anncore {args.command}: error: {_one_line(err)} (--debug shows the traceback)", file=sys.stderr
        )
        return 2


def _one_line(err: Exception) -> str:
    """``err``'s message; for an ``OSError``, its reason and the file it names (``No space left on device: F``); for
    an error raised in a DataLoader worker (which PyTorch re-raises with the worker's traceback in the message), the
    worker's own message."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    message = str(err).strip()
    if "Original Traceback" in message:  # torch.utils.data._utils.ExceptionWrapper
        return message.splitlines()[-1].split(": ", 1)[-1]  # "module.Type: the message"
    return message


if __name__ == "__main__":
    sys.exit(main())
