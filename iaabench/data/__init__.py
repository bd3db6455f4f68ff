"""One module per dataset layout. Importing this package imports every module in it, which
registers its datasets: adding a dataset is adding a loader module (and its protocol entry)."""
import importlib
import pkgutil

_SHARED = {"samples", "images", "pipeline", "cache", "fast", "labels", "verify"}

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_") and _m.name not in _SHARED:
        importlib.import_module(f"{__name__}.{_m.name}")
