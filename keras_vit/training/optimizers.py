"""Optimisers as the papers use them.

- `"adamw"` (from scratch, ViT paper / DeiT / AugReg): AdamW, linear warmup
  then cosine decay to zero, no weight decay on biases, LayerNorm scales and
  offsets, the position embedding or the class token; global gradient-norm
  clipping at 1.0.
- `"sgd"` (fine-tuning, ViT paper appendix B.1.1): SGD with momentum 0.9, no
  weight decay, the same clipping, warmup and cosine decay (`FINE_TUNE_RECIPE`).
- `layer_decay` (either recipe; full fine-tuning as BEiT, DeiT III and timm do
  it): each variable's learning rate (and its weight decay, which AdamW scales
  by the learning rate) times `layer_decay ** (L + 1 - depth)`, the embedding
  at depth 0, block `i` at `i + 1`, the final norm and head at `L + 1`.

Keras only: `import keras_vit` registers these optimisers (trained models are
saved with them) on every backend. TensorFlow is imported only on its own
backend, where the replicas of a `tf.distribute` strategy exist.
"""

import dataclasses
import re

import keras
from keras import ops

from keras_vit.model import ROLES
from keras_vit.training.settings import RECIPES  # declared with the flag

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
else:  # no tf.distribute replicas on the other backends
    tf = None

# Variable names (regex) exempt from weight decay: biases, LayerNorm gamma/beta,
# the position embedding ("embedding") and the class token ("token").
NO_WEIGHT_DECAY = ["bias", "gamma", "beta", "embedding", "token"]


def _replicas():
    if tf is None or not tf.distribute.has_strategy():
        return 1
    return tf.distribute.get_strategy().num_replicas_in_sync


class _ClipAfterAllReduce:
    """Global-norm clipping of the summed gradients under several replicas.

    Keras 3's TensorFlow optimizers clip each replica's partial gradient before
    the all-reduce (`BaseOptimizer.apply` calls `_clip_gradients`, then
    `TFOptimizer._backend_update_step` calls `_all_reduce_sum_gradients`), so
    under `MirroredStrategy` `global_clipnorm=1.0` clips something else than
    on one device and the runs diverge (tf.keras once disabled clipping under
    strategies for this reason: tensorflow/tensorflow#33929). This moves the
    clip after the sum. Private hooks, checked on Keras 3.10-3.15.
    """

    def _clip_gradients(self, grads):
        if _replicas() > 1 and tf.distribute.in_cross_replica_context() is False:
            return grads  # clipped once summed, below
        return super()._clip_gradients(grads)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        summed = list(super()._all_reduce_sum_gradients(grads_and_vars))
        if _replicas() > 1 and self.global_clipnorm:
            grads, _ = tf.clip_by_global_norm([g for g, _ in summed], self.global_clipnorm)
            summed = [(g, v) for g, (_, v) in zip(grads, summed)]
        return summed


# The layers a ViT's tokens pass before its first block: depth 0 for layer-wise decay.
EMBEDDING_LAYERS = ROLES["embedding"]
_BLOCK = re.compile(r"(?:^|/)block_(\d+)/")


def layer_depth(path, num_layers):
    """A variable's depth for layer-wise decay, from its path (`"block_3/mlp_dense_1/kernel"` -> 4).

    0 for the embedding (`EMBEDDING_LAYERS`), `i + 1` for block `i`, `num_layers + 1` for
    everything after the blocks (final norm, pooling, pre-logits, heads), as timm's
    `param_groups_layer_decay` groups a ViT.
    """
    block = _BLOCK.search(path)
    if block:
        return int(block[1]) + 1
    if any(part in EMBEDDING_LAYERS for part in path.split("/")):
        return 0
    return num_layers + 1


class _LayerDecay:
    """Per-variable learning-rate multipliers for layer-wise learning-rate decay.

    Keras optimisers have one learning rate; timm gives each depth its own parameter group.
    Here the multiplier of each variable is computed once, in `build`, from its path
    (`layer_depth`), and applied where Keras uses the learning rate: `update_step` for the
    step, and the decoupled weight decay, moved into `update_step` so that it sees the same
    scaled rate (Keras' own `_apply_weight_decay` reads the optimiser's single rate).
    Only `layer_decay` and `num_layers` are stored, so the optimiser's config stays small.
    """

    def __init__(self, *args, layer_decay=None, num_layers=None, **kwargs):
        super().__init__(*args, **kwargs)
        if layer_decay is not None:
            if not 0 < layer_decay <= 1 or not isinstance(num_layers, int) or num_layers < 1:
                raise ValueError(
                    f"layer_decay={layer_decay!r} must be in (0, 1] (e.g. 0.75), with num_layers "
                    f"(got {num_layers!r}) the model's number of blocks."
                )
            if keras.backend.backend() == "torch":  # Keras' torch optimisers never call update_step
                raise ValueError("layer_decay needs the TensorFlow or JAX backend; Keras runs on torch here.")
        self.layer_decay, self.num_layers = layer_decay, num_layers
        self._lr_multipliers = None

    def build(self, variables):
        super().build(variables)
        if self.layer_decay is not None:
            top = self.num_layers + 1
            self._lr_multipliers = [
                float(self.layer_decay ** (top - layer_depth(v.path, self.num_layers))) for v in variables
            ]

    def learning_rate_multiplier(self, variable):
        """The factor on `variable`'s learning rate (1 without layer decay)."""
        if self._lr_multipliers is None:
            return 1.0
        return self._lr_multipliers[self._get_variable_index(variable)]

    def _apply_weight_decay(self, variables):
        if self.layer_decay is None:
            super()._apply_weight_decay(variables)
        # else: in update_step, with each variable's own learning rate

    def update_step(self, gradient, variable, learning_rate):
        if self.layer_decay is not None:
            learning_rate = ops.multiply(learning_rate, self.learning_rate_multiplier(variable))
            if self.weight_decay is not None and self._use_weight_decay(variable):
                decay = ops.cast(self.weight_decay, variable.dtype) * ops.cast(learning_rate, variable.dtype)
                variable.assign(variable - variable * decay)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "layer_decay": self.layer_decay, "num_layers": self.num_layers}


@keras.saving.register_keras_serializable(package="keras_vit")
class AdamW(_LayerDecay, _ClipAfterAllReduce, keras.optimizers.AdamW):
    """Keras' AdamW, clipping correctly under several replicas, with optional layer-wise decay."""


@keras.saving.register_keras_serializable(package="keras_vit")
class SGD(_LayerDecay, _ClipAfterAllReduce, keras.optimizers.SGD):
    """Keras' SGD, clipping correctly under several replicas, with optional layer-wise decay."""


def make_optimizer(
    recipe,
    *,
    learning_rate,
    total_steps,
    warmup_steps,
    weight_decay=0.05,
    clipnorm=1.0,
    layer_decay=None,
    num_layers=None,
):
    """Builds the recipe's optimiser with a warmup + cosine learning-rate schedule.

    `layer_decay` (with the model's `num_layers`) scales each variable's learning rate by
    `layer_decay ** (num_layers + 1 - depth)` (`layer_depth`); `None` for one rate.
    """
    if recipe not in RECIPES:
        raise ValueError(f"Unknown recipe={recipe!r}; expected one of {RECIPES}.")
    if learning_rate <= 0:
        raise ValueError(f"learning_rate={learning_rate} must be positive.")
    decay = dict(layer_decay=layer_decay, num_layers=num_layers)
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(total_steps - warmup_steps, 1),
        warmup_target=learning_rate,
        warmup_steps=warmup_steps,
    )
    if recipe == "sgd":
        return SGD(schedule, momentum=0.9, global_clipnorm=clipnorm, **decay)
    optimizer = AdamW(schedule, weight_decay=weight_decay, global_clipnorm=clipnorm, **decay)
    optimizer.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
    return optimizer


@dataclasses.dataclass(frozen=True)
class FineTuneRecipe:
    """The ViT paper's fine-tuning setup (Dosovitskiy et al. 2020, Appendix B.1.1).

    SGD with momentum 0.9, no weight decay, gradients clipped at global norm 1,
    a short linear warmup then cosine decay to zero, batch 512. The paper
    sweeps the learning rate over `learning_rates` and fine-tunes at a higher
    resolution than pre-training (384 for the ImageNet results).
    """

    momentum: float = 0.9
    weight_decay: float = 0.0
    global_clipnorm: float = 1.0
    warmup_steps: int = 500  # the original code's fine-tuning configs
    batch_size: int = 512
    learning_rates: tuple = (0.001, 0.003, 0.01, 0.03)
    steps: int = 20_000  # ImageNet; the paper uses 500-10k for the smaller transfer sets

    def optimizer(self, learning_rate, total_steps=None):
        """A `keras.optimizers.SGD` following the recipe (warmup, then cosine to 0)."""
        total_steps = total_steps or self.steps
        return make_optimizer(
            "sgd",
            learning_rate=learning_rate,
            total_steps=total_steps,
            warmup_steps=min(self.warmup_steps, max(total_steps // 10, 1)),
            clipnorm=self.global_clipnorm,
        )


FINE_TUNE_RECIPE = FineTuneRecipe()
