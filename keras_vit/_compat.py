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


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
