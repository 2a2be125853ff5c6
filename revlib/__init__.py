"""revlib: the library behind the book *Why masked diffusion models escape the reversal curse*.

The experiment (``config``, ``data``, ``model``, ``objectives``, ``training``, ``measure``,
``cache``) and the analyses (``theory``, ``coupling``, ``gradients``, ``alignment``, ``sweep``,
``lm_probe``) produce numbers; ``revlib.book`` presents them (style, tables, figures, widgets,
exercises and one module of recipes per chapter). ``python -m revlib`` runs the book's
experiments from the shell.
"""
from . import cache  # first: it fingerprints the source of the modules imported next, as they are now
from .cache import cached_train
from .config import ConfigError, DataConfig, Experiment, ModelConfig, TrainConfig, preset
from .data import FactWorld, make_world
from .measure import evaluate
from .model import Transformer, build_model
from .training import Run, TrainingDiverged, train

__all__ = [
    "ConfigError", "DataConfig", "Experiment", "ModelConfig", "TrainConfig", "preset",
    "FactWorld", "make_world", "evaluate", "Transformer", "build_model", "Run", "TrainingDiverged", "train",
    "cached_train",
]
