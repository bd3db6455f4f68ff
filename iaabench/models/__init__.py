"""One module per paper. Importing this package imports every module in it, which registers
its models: adding a model is adding a module (and its card in baselines/)."""
import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_") and _m.name not in ("base", "backbones"):
        importlib.import_module(f"{__name__}.{_m.name}")
