"""Measurements of blocks and trained models: cost instruments and the benchmark suites, the environment report,
attention probes, the board-swap cue test and the head ablation.

May import the engine, the models, :mod:`anncore.nn`, :mod:`anncore.data` and the shared root modules; never the
course.
"""
