"""revlib: the library behind the book *Why masked diffusion models escape the reversal curse*.

One module per idea (see the README): ``config``, ``data``, ``model``, ``objectives``,
``train``, ``measure``; ``python -m revlib`` runs the book's experiments from the shell.
"""
from .config import ConfigError, DataConfig, Experiment, ModelConfig, TrainConfig, preset
from .data import FactWorld, make_world
from .measure import evaluate
from .model import Transformer
from .train import Run, TrainingDiverged, train
from .cache import cached_train

__all__ = [
    "ConfigError", "DataConfig", "Experiment", "ModelConfig", "TrainConfig", "preset",
    "FactWorld", "make_world", "evaluate", "Transformer", "Run", "TrainingDiverged", "train", "cached_train",
]
