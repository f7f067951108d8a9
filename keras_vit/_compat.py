"""The module paths of keras_vit 0.1.0, kept working after the package moved into subpackages.

`import keras_vit.export` (or `from keras_vit.weights import load_weights`)
gives the module's new home, `keras_vit.deploy.export`, with a
`DeprecationWarning` naming it. A finder on `sys.meta_path` does this instead
of a file per old name, so `ls keras_vit` shows only the current design.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "keras_vit.variants": "keras_vit.config",
    "keras_vit.weights": "keras_vit.checkpoints",
    "keras_vit.checkpoint_formats": "keras_vit.checkpoints.formats",
    "keras_vit.checkpoint_keys": "keras_vit.checkpoints.canonical",
    "keras_vit.checkpoint_adapt": "keras_vit.checkpoints.adapt",
    "keras_vit.resample": "keras_vit.checkpoints.resample",
    # 0.2.0's checkpoint modules, before the family table (issue 19)
    "keras_vit.checkpoints.keys": "keras_vit.checkpoints.canonical",
    "keras_vit.checkpoints.pretrained": "keras_vit.builders",
    "keras_vit.checkpoints.hub": "keras_vit.checkpoints.checkpoint",
    "keras_vit.checkpoints.torch_layouts": "keras_vit.checkpoints.timm",
    "keras_vit.data": "keras_vit.training.data",
    "keras_vit.digits": "keras_vit.training.digits",
    "keras_vit.recipes": "keras_vit.training.optimizers",  # strategies: keras_vit.training.distribute
    "keras_vit.train": "keras_vit.training.train",
    "keras_vit.reports": "keras_vit.training.reports",
    "keras_vit.export": "keras_vit.deploy.export",
    "keras_vit.saved_model": "keras_vit.deploy.saved_model",
    "keras_vit.tflite": "keras_vit.deploy.litert",
    "keras_vit.parity": "keras_vit.deploy.parity",
    "keras_vit.predict": "keras_vit.deploy.predict",
    # 0.2.0's: the views over a model in one subpackage, the A-ViT layers with the others
    "keras_vit.tome": "keras_vit.views.tome",
    "keras_vit.adaptive": "keras_vit.views.adaptive",
    "keras_vit.halting": "keras_vit.layers.halting",
}

# 0.2.0's names that moved out of a module that still exists: module -> {name: its new module}.
MOVED_NAMES = {
    # 0.2.0's builders, in a module of their own since the family table (issue 19)
    "keras_vit.checkpoints": {
        name: "keras_vit.builders"
        for name in (
            "build_vit",
            "build_from_checkpoint",
            "vit_ti16",
            "vit_s16",
            "vit_b16",
            "vit_b32",
            "vit_l16",
            "vit_l32",
            "vit_h14",
        )
    },  # fmt: skip
    "keras_vit.model": {
        "attention_model": "keras_vit.views.attention",
        "BlockWithAttention": "keras_vit.views.attention",
        "features_model": "keras_vit.views.features",
        "fixed_size_model": "keras_vit.views.features",
    },
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there.", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # the new module has run already; `sys.modules[old]` now names it


def _moved_names(module_name, names):
    """A module `__getattr__` (PEP 562) that finds a moved name in its new module, with a warning."""

    def __getattr__(name):
        if name not in names:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        warnings.warn(
            f"{module_name}.{name} moved to {names[name]}; import it from there.", DeprecationWarning, stacklevel=2
        )
        return getattr(importlib.import_module(names[name]), name)

    return __getattr__


def install():
    """Called once by `keras_vit/__init__.py`: the old module paths and the moved names resolve again."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
    for module_name, names in MOVED_NAMES.items():
        # Through importlib, not an import statement: these are aliases, not dependencies of this module.
        importlib.import_module(module_name).__getattr__ = _moved_names(module_name, names)
