"""The train step: the loop and its resume state, optimisers and schedules, augmentation,
CPU kernels and data parallelism. Nothing outside training imports this package.
"""
