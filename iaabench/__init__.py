"""iaabench: one protocol, many models, one table for image aesthetics assessment."""
from .api import create_model, list_datasets, list_models, load_dataset, load_scorer

__version__ = "0.1.0"
__all__ = ["create_model", "load_dataset", "load_scorer", "list_models", "list_datasets", "__version__"]
