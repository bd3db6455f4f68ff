"""One module per dataset layout. Importing this package imports every module in it, which
registers its datasets: adding a dataset is adding a loader module (and its protocol entry)."""
import importlib
import pkgutil

# Shared modules register nothing: the synthetic image generator and the layouts' synthetic
# writers are used by `synthetic` (which registers the synth-* datasets).
_SHARED = {"samples", "images", "pipeline", "cache", "fast", "labels", "verify",
           "synthetic_images", "tad66k_synthetic", "ava_synthetic", "flickr_aes_synthetic"}

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_") and _m.name not in _SHARED:
        importlib.import_module(f"{__name__}.{_m.name}")
