"""The one command line: ``python -m anncore <command>``; ``python -m anncore --help`` lists the commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _info(args: argparse.Namespace) -> int:
    from anncore.env import environment_report

    report = environment_report(args.device)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        width = max(len(key) for key in report)
        for key, value in report.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _course(args: argparse.Namespace) -> int:
    from anncore.course import run_course

    rows = run_course(Path(args.notebooks), Path(args.params), Path(args.out), args.in_place, args.only)
    return 0 if all(row["status"] == "ok" for row in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m anncore",
        description="Asymmetric Non-local Neural Networks (ICCV 2019): blocks, data, training, benchmarks.",
    )
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
    course.set_defaults(run=_course)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
