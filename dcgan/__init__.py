"""DCGAN Studio: train and explore a DCGAN (Radford et al. 2015) from a browser or the command line."""

from .config import ConfigError, TrainConfig
from .models import Discriminator, Generator

__version__ = "0.1.0"
__all__ = ["ConfigError", "Discriminator", "Generator", "TrainConfig", "__version__"]
