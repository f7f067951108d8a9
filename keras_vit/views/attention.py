"""Attention maps: the model's own layers, every block also returning its attention weights.

    view = keras_vit.attention_model(model)   # {"logits": (B, C), "attention": [(B, h, T, T)] * L}

Rollout and overlays over these maps are in `keras_vit.visualize`.

Legend: `B` batch, `T` tokens, `D` hidden_dim, `h` heads, `L` blocks.
"""

import keras

from keras_vit.model import forward, image_layers


def attention_model(model):
    """A functional model over `model`'s own layers that also returns every block's attention.

    `forward` over `ViTLayers.of(model)`, each block called through
    `BlockWithAttention`: the same layer objects and weights, nothing rebuilt
    or copied. Works for class-token and `gap` models, any image size, with or
    without `pre_logits` and `head`; saved as `.keras`, it loads with
    `safe_mode=True`.

    Args:
        model: a model made by `keras_vit.build_vit` (or loaded from its `.keras` file).

    Returns:
        A `keras.Model` mapping `images` to `{"logits": (B, C), "attention":
        [(B, h, T, T)] * L}` (`"logits"` holds the pooled features for a model
        built with `include_top=False`).
    """
    attention = []

    def record(block, state):
        tokens, scores = BlockWithAttention(block, name=f"{block.name}_attention")(
            state.tokens, **state.block_arguments()
        )  # (B, T, D), (B, h, T, T)
        attention.append(scores)
        return state.replace(tokens=tokens)

    layers = image_layers(model, "attention_model")
    images = keras.Input(shape=model.input_shape[1:], name="images")
    logits = forward(layers, images, record)
    return keras.Model(images, {"logits": logits, "attention": attention}, name=f"{model.name}_attention")


@keras.saving.register_keras_serializable(package="keras_vit")
class BlockWithAttention(keras.layers.Layer):
    """Calls a model's `TransformerBlock` with `return_attention_scores=True`, as one graph node.

    Not the block itself in the new graph: Keras' functional graph takes a
    shared layer's number of outputs from its first call, which in the
    trained model returned the tokens alone, so a second call returning two
    outputs fails the connectivity check. This layer's one call returns both;
    the block inside is the model's own, weights and all.

    Args:
        block: the `TransformerBlock` to call.
    """

    def __init__(self, block, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def build(self, input_shape):
        if not self.block.built:  # a block deserialised from a saved attention model
            self.block.build(input_shape)

    def call(self, tokens, training=None, attention_bias=None, positions=None, rotary=None):
        extras = dict(attention_bias=attention_bias, positions=positions, rotary=rotary)  # the TokenState's
        extras = {key: value for key, value in extras.items() if value is not None}
        return self.block(tokens, training=training, return_attention_scores=True, **extras)

    def get_config(self):
        return {**super().get_config(), "block": keras.saving.serialize_keras_object(self.block)}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "block": keras.saving.deserialize_keras_object(config["block"])})
