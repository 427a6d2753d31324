"""Training and evaluation: the configuration and its checks, the loss, the sampler and RNG states that make a
resume exact, the training loop (single process or torchrun), the evaluation loop and the mIoU metric.

May import :mod:`anncore.models`, :mod:`anncore.nn`, :mod:`anncore.data` and the shared root modules; never the
analyses or the course.
"""
