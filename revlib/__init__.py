"""revlib: the library behind the book *Why masked diffusion models escape the reversal curse*.

Everything outside ``revlib.book`` computes: the experiment (``config``, ``data``, ``model``,
``objectives``, ``training``, ``measure``, ``cache``, ``sweep``), the analyses (``theory``,
``coupling``, ``gradients``, ``alignment``, ``lm_probe``), the readable model (``minimal``), the
chapters' experiments and claims (``recipes``, ``claims``) and the results bundle (``bundle``).
``revlib.book`` only presents (style, tables, figures, explorers, exercises). ``python -m revlib``
runs the book's experiments from the shell.
"""
__version__ = "3.0.0"  # the book's edition and revlib's version (CHANGELOG.md)

from . import cache  # first: it fingerprints the source of the modules imported next, as they are now
from .cache import cached_train
from .config import ConfigError, DataConfig, Experiment, ModelConfig, TrainConfig, preset
from .data import FactWorld, make_world
from .measure import evaluate
from .model import Transformer, build_model
from .sweep import Sweep, sweep
from .training import Run, TrainingDiverged, train
from . import alignment, bundle, claims, coupling, measure, minimal, recipes, theory  # noqa: E402  (after sweep)

__all__ = [
    "ConfigError", "DataConfig", "Experiment", "ModelConfig", "TrainConfig", "preset", "__version__",
    "FactWorld", "make_world", "evaluate", "Transformer", "build_model", "Run", "TrainingDiverged", "train",
    "cached_train", "Sweep", "sweep", "alignment", "bundle", "claims", "coupling", "measure", "minimal", "recipes", "theory",
]
