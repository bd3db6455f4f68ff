"""iaabench: one protocol, many models, one table for image aesthetics assessment."""
from .api import create_model, list_datasets, list_models, load_dataset

__version__ = "0.1.0"
__all__ = ["create_model", "load_dataset", "load_scorer", "list_models", "list_datasets", "__version__"]


def __getattr__(name: str):
    # `iaabench.load_scorer` (iaabench/predict.py) is imported on first use: `import iaabench`
    # stays light, and `api` does not import `predict`, which builds models through `api`.
    if name == "load_scorer":
        from .predict import load_scorer

        return load_scorer
    raise AttributeError(f"module 'iaabench' has no attribute {name!r}")
