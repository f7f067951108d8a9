"""The layer contract, one table over every layer, plus what the paper says each does."""

import inspect

import keras
import numpy as np
import pytest
from keras import ops

from keras_vit import layers as vit_layers
from keras_vit.layers import (
    AddPositionEmbedding,
    AttentionPooling,
    ClassToken,
    ClassTokenPooling,
    LayerNorm,
    LayerScale,
    NaFlexPositionEmbedding,
    PaddingBias,
    PatchAveragePooling,
    PatchEmbedding,
    PatchGrid,
    RegisterTokens,
    RotaryEmbedding,
    SelfAttention,
    TokenSlice,
    TransformerBlock,
    apply_rotary,
    gelu,
    gelu_for_training,
)

pytestmark = pytest.mark.fast  # the edit loop's tier: `pytest -m fast`

_BLOCK_WEIGHTS = {
    "norm_1/gamma": (8,),
    "norm_1/beta": (8,),
    "attention/qkv/kernel": (8, 24),
    "attention/qkv/bias": (24,),
    "attention/output/kernel": (8, 8),
    "attention/output/bias": (8,),
    "norm_2/gamma": (8,),
    "norm_2/beta": (8,),
    "mlp_dense_1/kernel": (8, 16),
    "mlp_dense_1/bias": (16,),
    "mlp_dense_2/kernel": (16, 8),
    "mlp_dense_2/bias": (8,),
}

# (factory, input shape, {weight path suffix: shape}, output shape)
CASES = {
    "patch_embedding": (
        lambda: PatchEmbedding(patch_size=(4, 2), hidden_dim=8),
        (2, 8, 12, 3),
        {"projection/kernel": (4, 2, 3, 8), "projection/bias": (8,)},
        (2, 12, 8),
    ),
    "class_token": (lambda: ClassToken(), (2, 6, 8), {"token": (1, 1, 8)}, (2, 7, 8)),
    "position_embedding": (
        lambda: AddPositionEmbedding(num_prefix_tokens=1),
        (2, 7, 8),
        {"embedding": (1, 7, 8)},
        (2, 7, 8),
    ),
    "class_token_pooling": (lambda: ClassTokenPooling(), (2, 7, 8), {}, (2, 8)),
    "layer_norm": (lambda: LayerNorm(epsilon=1e-6), (2, 7, 8), {"gamma": (8,), "beta": (8,)}, (2, 7, 8)),
    "self_attention": (
        lambda: SelfAttention(num_heads=2, dropout_rate=0.1),
        (2, 7, 8),
        {"qkv/kernel": (8, 24), "qkv/bias": (24,), "output/kernel": (8, 8), "output/bias": (8,)},
        (2, 7, 8),
    ),
    "transformer_block": (
        lambda: TransformerBlock(
            num_heads=2, mlp_dim=16, dropout_rate=0.1, attention_dropout_rate=0.1, drop_path_rate=0.1
        ),
        (2, 7, 8),
        _BLOCK_WEIGHTS,
        (2, 7, 8),
    ),
    # The options of the ViT's descendants (tests/test_families.py checks what each computes).
    "patch_embedding_without_bias": (
        lambda: PatchEmbedding(patch_size=4, hidden_dim=8, use_bias=False),
        (2, 8, 12, 3),
        {"projection/kernel": (4, 4, 3, 8)},
        (2, 6, 8),
    ),
    "register_tokens": (lambda: RegisterTokens(num_tokens=3), (2, 6, 8), {"tokens": (1, 3, 8)}, (2, 9, 8)),
    "position_embedding_on_a_grid": (
        lambda: AddPositionEmbedding(num_prefix_tokens=1, grid=(2, 3), patch_size=4),
        (2, 7, 8),
        {"embedding": (1, 7, 8)},
        (2, 7, 8),
    ),
    "distillation_token_pooling": (lambda: ClassTokenPooling(index=1), (2, 7, 8), {}, (2, 8)),
    "layer_scale": (lambda: LayerScale(init_value=1e-5), (2, 7, 8), {"scale": (8,)}, (2, 7, 8)),
    "transformer_block_with_layer_scale": (
        lambda: TransformerBlock(num_heads=2, mlp_dim=16, activation="quick_gelu", layer_scale_init=1e-5),
        (2, 7, 8),
        {**_BLOCK_WEIGHTS, "layer_scale_1/scale": (8,), "layer_scale_2/scale": (8,)},
        (2, 7, 8),
    ),
    "patch_average_pooling": (lambda: PatchAveragePooling(num_prefix_tokens=2), (2, 7, 8), {}, (2, 8)),
    "attention_pooling": (
        lambda: AttentionPooling(num_heads=2, mlp_dim=16, activation="gelu_tanh"),
        (2, 7, 8),
        {
            "probe": (1, 1, 8),
            "query/kernel": (8, 8),
            "query/bias": (8,),
            "key_value/kernel": (8, 16),
            "key_value/bias": (16,),
            "output/kernel": (8, 8),
            "output/bias": (8,),
            "norm/gamma": (8,),
            "norm/beta": (8,),
            "mlp_dense_1/kernel": (8, 16),
            "mlp_dense_1/bias": (16,),
            "mlp_dense_2/kernel": (16, 8),
            "mlp_dense_2/bias": (8,),
        },
        (2, 8),
    ),
    "token_slice": (lambda: TokenSlice(0, 3), (2, 7, 8), {}, (2, 3, 8)),
    # The 2025-26 families' options (issue 20).
    "rotary_embedding": (
        lambda: RotaryEmbedding(head_dim=8, patch_size=4, num_prefix_tokens=1, grid=(2, 3)),
        (2, 8, 12, 3),
        {},
        (7, 16),  # one table for the batch: (prefix + patches, sines | cosines)
    ),
    "rotary_embedding_index": (
        lambda: RotaryEmbedding(
            head_dim=4,
            patch_size=(4, 2),
            coordinates="index",
            temperature=10000.0,
            reference_grid=(3, 3),
            grid_offset=1.0,
            grid_indexing="xy",
            rotate_half=False,
        ),
        (2, 8, 12, 3),
        {},
        (12, 8),
    ),
    "self_attention_with_options": (
        lambda: SelfAttention(
            num_heads=2, key_bias=False, proj_bias=False, qk_norm=True, attention_norm=True, norm="rmsnorm"
        ),
        (2, 7, 8),
        {
            "qkv/kernel": (8, 24),
            "query_bias": (8,),
            "value_bias": (8,),
            "output/kernel": (8, 8),
            "query_norm/scale": (4,),
            "key_norm/scale": (4,),
            "attention_norm/scale": (8,),
        },
        (2, 7, 8),
    ),
    "transformer_block_swiglu": (
        lambda: TransformerBlock(
            num_heads=2, mlp_dim=16, mlp="swiglu", mlp_norm=True, qkv_bias=False, mlp_bias=False, qk_norm=True
        ),
        (2, 7, 8),
        {
            "norm_1/gamma": (8,),
            "norm_1/beta": (8,),
            "attention/qkv/kernel": (8, 24),
            "attention/output/kernel": (8, 8),
            "attention/output/bias": (8,),
            "attention/query_norm/gamma": (4,),
            "attention/query_norm/beta": (4,),
            "attention/key_norm/gamma": (4,),
            "attention/key_norm/beta": (4,),
            "norm_2/gamma": (8,),
            "norm_2/beta": (8,),
            "mlp_dense_1/kernel": (8, 32),  # (gate | value)
            "mlp_norm/gamma": (16,),
            "mlp_norm/beta": (16,),
            "mlp_dense_2/kernel": (16, 8),
        },
        (2, 7, 8),
    ),
    "attention_pooling_rmsnorm": (
        lambda: AttentionPooling(num_heads=4, mlp_dim=12, norm="rmsnorm"),
        (2, 7, 8),
        {
            "probe": (1, 1, 8),
            "query/kernel": (8, 8),
            "query/bias": (8,),
            "key_value/kernel": (8, 16),
            "key_value/bias": (16,),
            "output/kernel": (8, 8),
            "output/bias": (8,),
            "norm/scale": (8,),
            "mlp_dense_1/kernel": (8, 12),
            "mlp_dense_1/bias": (12,),
            "mlp_dense_2/kernel": (12, 8),
            "mlp_dense_2/bias": (8,),
        },
        (2, 8),
    ),
    # SigLIP 2's NaFlex: pre-patchified input, its padding mask as an attention bias.
    "patch_embedding_patchified": (
        lambda: PatchEmbedding(patch_size=(4, 2), hidden_dim=8, patchified=True),
        (2, 6, 24),
        {"projection/kernel": (4, 2, 3, 8), "projection/bias": (8,)},
        (2, 6, 8),
    ),
    "padding_bias": (lambda: PaddingBias(), (2, 7), {}, (2, 1, 1, 7)),
}
# Layers of two inputs, which the table's one-input checks cannot call; their own tests below.
TWO_INPUTS = {"PatchGrid", "NaFlexPositionEmbedding"}
BASE_CONFIG_KEYS = set(keras.layers.Layer().get_config())
BASE_INIT_PARAMS = set(inspect.signature(keras.layers.Layer.__init__).parameters) | {"self", "kwargs"}


def _random(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.fixture(params=sorted(CASES))
def case(request):
    return CASES[request.param]


def test_every_public_layer_is_in_the_table():
    public = {
        name
        for name, obj in vars(vit_layers).items()
        if inspect.isclass(obj) and issubclass(obj, keras.layers.Layer) and obj.__module__.startswith("keras_vit.")
    }
    assert public == set(vit_layers.__all__) & public  # each one named in keras_vit.layers' __all__
    tested = {type(factory()).__name__ for factory, *_ in CASES.values()}
    assert public == tested | TWO_INPUTS


def test_patch_grid_contract_and_shape(tmp_path, to_numpy):
    layer = PatchGrid(num_prefix_tokens=2, patch_size=(4, 2))
    assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()
    tokens, images = _random((2, 2 + 3 * 5, 8)), _random((2, 12, 10, 3))
    grid = to_numpy(layer(tokens, images))
    np.testing.assert_array_equal(grid, tokens[:, 2:].reshape(2, 3, 5, 8))  # row-major, prefix dropped
    inputs = keras.Input((None, 8)), keras.Input((None, None, 3))
    symbolic = layer(*inputs)
    assert tuple(symbolic.shape) == (None, None, None, 8)


def test_naflex_position_embedding_contract_and_shape(tmp_path, to_numpy):
    layer = NaFlexPositionEmbedding(grid=(2, 3))
    assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()
    inputs = keras.Input((None, 8)), keras.Input((2,), dtype="int32")
    model = keras.Model(inputs, layer(*inputs))
    assert [tuple(w.shape) for w in layer.weights] == [(1, 6, 8)] and tuple(model.output.shape) == (None, None, 8)
    layer.embedding.assign(_random((1, 6, 8), seed=1))
    tokens, shapes = _random((2, 5, 8)), np.array([[2, 3], [1, 4]], "int32")
    out = to_numpy(model((tokens, shapes)))
    # At the table's own grid the table is added as it is; padding (index 4 of the 1x4 image) gets position 0.
    np.testing.assert_allclose(out[0, :5], tokens[0] + to_numpy(layer.embedding)[0, :5], atol=1e-6)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(to_numpy(loaded((tokens, shapes))), out)
    np.testing.assert_allclose(out[1, 4] - tokens[1, 4], out[1, 0] - tokens[1, 0], atol=1e-6)


def test_patchified_patch_embedding_equals_the_conv_on_the_same_image(to_numpy):
    conv, flat = PatchEmbedding(patch_size=(4, 2), hidden_dim=8), PatchEmbedding((4, 2), 8, patchified=True)
    images = _random((2, 8, 6, 3))
    conv.build(images.shape)
    flat.build((None, None, 24))
    flat.set_weights(conv.get_weights())
    patches = images.reshape(2, 2, 4, 3, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 6, 24)  # (row, col, channel)
    np.testing.assert_allclose(to_numpy(flat(patches)), to_numpy(conv(images)), atol=1e-5)
    with pytest.raises(ValueError, match=r"patches of shape \(B, N, p\*p\*C\) with patch_size=\(4, 2\)"):
        PatchEmbedding((4, 2), 8, patchified=True).build((None, None, 25))


def test_padding_bias_hides_padding_keys_and_is_finite_where_it_must_be(to_numpy):
    bias = to_numpy(PaddingBias()(np.array([[1, 1, 0], [1, 0, 0]], "int32")))
    assert bias.shape == (2, 1, 1, 3)
    np.testing.assert_array_equal(bias[:, 0, 0], [[0, 0, -1e9], [0, -1e9, -1e9]])
    half = to_numpy(PaddingBias(dtype="mixed_float16")(np.array([[1, 0]], "int32")))
    assert half[0, 0, 0, 0] == 0 and not np.isnan(half).any()  # -1e9 is -inf in float16, never 0 * inf


def test_config_mirrors_init_and_round_trips(case):
    factory, *_ = case
    layer = factory()
    config = layer.get_config()
    own = set(config) - BASE_CONFIG_KEYS
    params = set(inspect.signature(type(layer).__init__).parameters) - BASE_INIT_PARAMS
    assert own == params
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    # Registered: the serialized name resolves without custom_objects.
    assert keras.saving.get_registered_object(f"keras_vit>{type(layer).__name__}") is type(layer)


def test_build_creates_every_weight(case):
    factory, input_shape, weights, _ = case
    layer = factory()
    layer.build(input_shape)
    assert layer.built
    got = {w.path.split("/", 1)[1]: tuple(w.shape) for w in layer.weights}
    assert got == weights


def test_symbolic_eager_and_computed_shapes_agree(case):
    factory, input_shape, _, output_shape = case
    layer = factory()
    symbolic = layer(keras.Input(batch_shape=input_shape))
    eager = layer(_random(input_shape))
    assert tuple(symbolic.shape) == tuple(eager.shape) == output_shape
    assert tuple(layer.compute_output_shape(input_shape)) == output_shape


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_dtypes(case, policy):
    factory, input_shape, _, _ = case
    layer = type(factory()).from_config({**factory().get_config(), "dtype": policy})
    out = layer(_random(input_shape))
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
    assert all(w.dtype == "float32" for w in layer.weights)


def test_keras_file_round_trip_inside_a_model(case, tmp_path, to_numpy):
    factory, input_shape, _, _ = case
    inputs = keras.Input(shape=input_shape[1:])
    model = keras.Model(inputs, factory()(inputs))
    for w in model.weights:  # zero-initialised weights would hide a weight that is not saved
        w.assign(_random(w.shape, seed=1))
    x = _random(input_shape)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))


# --- what the paper says each layer does ------------------------------------------


def test_conv_patch_embedding_equals_cut_flatten_and_matmul():
    layer = PatchEmbedding(patch_size=16, hidden_dim=768)
    images = _random((2, 224, 224, 3))
    tokens = keras.ops.convert_to_numpy(layer(images))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.projection.weights)
    # Cut into 14x14 patches of 16x16x3, row-major, each flattened as (row, col, channel).
    patches = images.reshape(2, 14, 16, 14, 16, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 196, 768)
    naive = patches @ kernel.reshape(768, 768) + bias
    assert tokens.shape == (2, 196, 768)
    np.testing.assert_allclose(tokens, naive, atol=2e-4)


def test_patch_embedding_non_square_image_and_patch():
    layer = PatchEmbedding(patch_size=(8, 4), hidden_dim=5)
    assert tuple(layer(_random((1, 32, 48, 1))).shape) == (1, 4 * 12, 5)


def test_patch_embedding_rejects_indivisible_images():
    with pytest.raises(ValueError, match=r"height 30 is not divisible by patch_size=\(16, 16\)"):
        PatchEmbedding(16, 8).build((None, 30, 32, 3))
    with pytest.raises(ValueError, match="at least 1 channel"):
        PatchEmbedding(16, 8).build((None, 32, 32, 0))


def test_class_token_is_prepended_at_index_zero():
    layer = ClassToken()
    tokens = _random((3, 5, 4))
    layer.build(tokens.shape)
    layer.token.assign(np.arange(4, dtype="float32").reshape(1, 1, 4))
    out = keras.ops.convert_to_numpy(layer(tokens))
    np.testing.assert_array_equal(out[:, 0], np.broadcast_to(np.arange(4), (3, 4)))
    np.testing.assert_array_equal(out[:, 1:], tokens)
    assert np.all(keras.ops.convert_to_numpy(ClassToken()(tokens))[:, 0] == 0)  # zero init


def test_position_embedding_is_added_and_initialised_with_stddev_002():
    layer = AddPositionEmbedding()
    tokens = _random((2, 197, 768))
    out = keras.ops.convert_to_numpy(layer(tokens))
    embedding = keras.ops.convert_to_numpy(layer.embedding)
    np.testing.assert_allclose(out, tokens + embedding, rtol=1e-6)
    assert 0.018 < embedding.std() < 0.022


def test_dropout_in_the_block_is_inverted_and_idle_at_inference(to_numpy):
    block = TransformerBlock(num_heads=1, mlp_dim=8, dropout_rate=0.5, drop_path_rate=0.5)
    x = _random((64, 3, 4))
    block.build(x.shape)
    np.testing.assert_array_equal(to_numpy(block(x)), to_numpy(block(x)))  # training defaults to False
    assert not np.allclose(to_numpy(block(x, training=True)), to_numpy(block(x)))
    ones = np.ones((4000, 2, 3), "float32")
    kept = keras.ops.convert_to_numpy(block.dropout(ones, training=True))
    assert set(np.unique(kept)) == {0.0, 2.0}  # survivors scaled by 1 / (1 - 0.5)
    assert 0.45 < (kept == 0).mean() < 0.55
    per_sample = keras.ops.convert_to_numpy(block.drop_path(ones, training=True))
    assert np.all(per_sample.min(axis=(1, 2)) == per_sample.max(axis=(1, 2)))  # whole sample kept or dropped
    assert set(np.unique(per_sample)) == {0.0, 2.0}


def test_block_returns_attention_weights_that_sum_to_one(to_numpy):
    block = TransformerBlock(num_heads=2, mlp_dim=8)
    out, scores = block(_random((2, 5, 4)), return_attention_scores=True)
    assert tuple(out.shape) == (2, 5, 4) and tuple(scores.shape) == (2, 2, 5, 5)
    np.testing.assert_allclose(to_numpy(scores).sum(axis=-1), 1.0, rtol=1e-5)


def test_block_rejects_heads_that_do_not_divide_hidden_dim():
    with pytest.raises(ValueError, match="hidden_dim=10 is not divisible by num_heads=3"):
        TransformerBlock(num_heads=3, mlp_dim=8).build((None, 5, 10))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_heads=0, mlp_dim=8), "num_heads=0"),
        (dict(num_heads=2, mlp_dim=-1), "mlp_dim=-1"),
        (dict(num_heads=2, mlp_dim=8, dropout_rate=1.0), r"dropout_rate=1.0 must be a number in \[0, 1\)"),
        (dict(num_heads=2, mlp_dim=8, attention_dropout_rate=-0.1), "attention_dropout_rate=-0.1"),
        (dict(num_heads=2, mlp_dim=8, drop_path_rate=2), "drop_path_rate=2"),
    ],
)
def test_block_rejects_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransformerBlock(**kwargs)


def test_self_attention_equals_keras_multi_head_attention_with_the_same_weights(to_numpy):
    from keras_vit.layers import SelfAttention

    dim, heads = 12, 3
    tokens = _random((2, 5, dim))
    ours = SelfAttention(heads)
    ours.build(tokens.shape)
    for w in ours.weights:
        w.assign(_random(w.shape, seed=3))
    reference = keras.layers.MultiHeadAttention(heads, key_dim=dim // heads)
    reference.build(tokens.shape, tokens.shape)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in ours.qkv.weights)  # (D, 3D): query | key | value
    for i, dense in enumerate((reference._query_dense, reference._key_dense, reference._value_dense)):
        dense.kernel.assign(kernel[:, i * dim : (i + 1) * dim].reshape(dim, heads, dim // heads))
        dense.bias.assign(bias[i * dim : (i + 1) * dim].reshape(heads, dim // heads))
    out_kernel, out_bias = (keras.ops.convert_to_numpy(w) for w in ours.output_dense.weights)
    reference._output_dense.kernel.assign(out_kernel.reshape(heads, dim // heads, dim))
    reference._output_dense.bias.assign(out_bias)
    expected, expected_scores = to_numpy(reference(tokens, tokens, return_attention_scores=True))
    got, scores = to_numpy(ours(tokens, return_attention_scores=True))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-6)


def test_symbolic_block_call_returns_the_attention_weights_when_asked():
    block = TransformerBlock(num_heads=2, mlp_dim=8)
    tokens, scores = block(keras.Input((5, 4)), return_attention_scores=True)
    assert tuple(tokens.shape) == (None, 5, 4) and tuple(scores.shape) == (None, 2, 5, 5)


# Keras' own LayerNormalization (the reference, and what LayerNorm runs for any axis but the last) hands a
# non-trailing axis to torch's F.layer_norm, which raises; fixed upstream by keras-team/keras#23510.
KERAS_TORCH_NON_TRAILING_AXIS = pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="Keras 3.15's LayerNormalization raises for a non-trailing axis on torch (keras-team/keras#23510)",
)


@pytest.mark.parametrize(
    "shape, axis",
    [
        ((6, 32), -1),
        ((2, 5, 32), -1),
        ((2, 5, 32), 2),
        pytest.param((2, 5, 32), 1, marks=KERAS_TORCH_NON_TRAILING_AXIS),
    ],
)
def test_layer_norm_equals_keras_layer_normalization_values_and_gradients(shape, axis, values_and_gradients):
    # Offset, scaled inputs and non-trivial gamma/beta: a wrong mean or variance term would show.
    x, upstream = 3.0 + 2.5 * _random(shape), _random(shape, 3)
    results = []
    for layer in (LayerNorm(axis=axis, epsilon=1e-6), keras.layers.LayerNormalization(axis=axis, epsilon=1e-6)):
        layer.build(shape)
        layer.gamma.assign(1 + _random(layer.gamma.shape, 1))
        layer.beta.assign(_random(layer.beta.shape, 2))
        results.append(values_and_gradients(layer, [x], upstream, [layer.gamma, layer.beta]))
    for ours, keras_own in zip(*results):
        np.testing.assert_allclose(ours, keras_own, rtol=1e-4, atol=1e-4)


def test_gelu_for_training_is_exact_gelu_with_its_gradient(values_and_gradients):
    x = np.concatenate([np.linspace(-12, 12, 241), _random((500,))]).astype("float32")
    upstream = _random(x.shape, 1)
    got = values_and_gradients(gelu_for_training, [x], upstream)
    want = values_and_gradients(lambda t: keras.activations.gelu(t, approximate=False), [x], upstream)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_inference_gelu_is_keras_exact_gelu(to_numpy):
    x = ops.convert_to_tensor(np.concatenate([np.linspace(-12, 12, 241), _random((500,))]).astype("float32"))
    np.testing.assert_allclose(to_numpy(gelu(x)), to_numpy(keras.activations.gelu(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.tensorflow
def test_tensorflow_fuses_the_inference_gelu_into_the_matmul_as_its_own():
    """Written with `erf` (for ONNX), GELU must still become the matmul's fused activation on TensorFlow."""
    import tensorflow as tf

    def executed_ops(activation):
        graph = tf.Graph()
        with graph.as_default():
            x, w, b = (tf.compat.v1.placeholder(tf.float32, shape) for shape in ((None, 8), (8, 16), (16,)))
            y = activation(tf.nn.bias_add(tf.matmul(x, w), b))
            with tf.compat.v1.Session(graph=graph) as session:
                metadata = tf.compat.v1.RunMetadata()
                feed = {x: _random((4, 8)), w: _random((8, 16), 1), b: _random((16,), 2)}
                options = tf.compat.v1.RunOptions(output_partition_graphs=True)
                session.run(y, feed, options=options, run_metadata=metadata)
        nodes = [node for graph in metadata.partition_graphs for node in graph.node]
        return sorted(
            (node.op, tuple(node.attr["fused_ops"].list.s)) for node in nodes if not node.op.startswith("_Arg")
        )

    own = executed_ops(lambda y: tf.nn.gelu(y, approximate=False))
    if not any(b"GeluExact" in fused for _, fused in own):
        pytest.skip("TensorFlow does not fuse its own GELU into the matmul on this machine")
    assert executed_ops(gelu) == own


def test_block_computes_the_same_function_in_training_and_inference(to_numpy):
    # Without dropout the two paths differ only in how GELU is written (fused vs hand-differentiated).
    block = TransformerBlock(num_heads=2, mlp_dim=32)
    x = _random((2, 7, 16))
    training, inference = to_numpy(block(x, training=True)), to_numpy(block(x, training=False))
    np.testing.assert_allclose(training, inference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scores, keys", [(True, False), (False, True), (True, True)])
def test_symbolic_self_attention_returns_what_an_eager_call_returns(scores, keys):
    layer = SelfAttention(2)
    flags = dict(return_attention_scores=scores, return_keys=keys)
    symbolic = layer(keras.Input((5, 4)), **flags)
    eager = layer(_random((3, 5, 4)), **flags)
    assert isinstance(symbolic, tuple) and len(symbolic) == len(eager) == 1 + scores + keys
    for s, e in zip(symbolic, eager):
        assert tuple(s.shape) == (None, *e.shape[1:]) and s.dtype == keras.backend.standardize_dtype(e.dtype)


# GELU computes in the half type itself; each implementation rounds its own intermediate results, so they
# differ by about one unit in the last place (measured: 2.0e-3 in float16, 1.6e-2 in bfloat16, both at
# values near 2-4). Tolerances of a few of them: float16 eps 9.8e-4, bfloat16 eps 7.8e-3.
HALF_TOLERANCE = {"mixed_float16": 4e-3, "mixed_bfloat16": 3e-2}


@pytest.mark.parametrize("policy", sorted(HALF_TOLERANCE))
def test_layer_norm_under_mixed_precision_equals_keras_values_and_gradients(policy, values_and_gradients):
    shape = (2, 5, 32)
    x, upstream = 3.0 + 2.5 * _random(shape), _random(shape, 3)
    results = []
    for layer in (LayerNorm(epsilon=1e-6, dtype=policy), keras.layers.LayerNormalization(epsilon=1e-6, dtype=policy)):
        layer.build(shape)
        layer.gamma.assign(1 + _random(layer.gamma.shape, 1))
        layer.beta.assign(_random(layer.beta.shape, 2))
        results.append(values_and_gradients(layer, [x], upstream, [layer.gamma, layer.beta]))
    # Both normalise the same half-precision input in float32 and round once: measured within 2e-7
    # of each other (relative to the largest value), so the float32 tolerance holds.
    for ours, keras_own in zip(*results):
        np.testing.assert_allclose(ours, keras_own, rtol=1e-4, atol=1e-4 * np.abs(keras_own).max())


@pytest.mark.parametrize("policy", sorted(HALF_TOLERANCE))
def test_gelu_for_training_under_mixed_precision_equals_keras_gelu(policy, values_and_gradients):
    dtype = policy.split("_")[1]
    x = np.concatenate([np.linspace(-8, 8, 161), _random((500,))]).astype("float32")
    upstream = _random(x.shape, 1)
    got = values_and_gradients(lambda t: gelu_for_training(keras.ops.cast(t, dtype)), [x], upstream)
    want = values_and_gradients(
        lambda t: keras.activations.gelu(keras.ops.cast(t, dtype), approximate=False), [x], upstream
    )
    tolerance = HALF_TOLERANCE[policy]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)


# --- the rotary embedding (issue 20) ---------------------------------------------------


def test_rotary_leaves_the_prefix_tokens_and_keeps_each_pairs_norm(to_numpy):
    x = _random((2, 3, 8, 8))
    for rotate_half in (True, False):  # the table's layout and the rotation's pairing go together
        layer = RotaryEmbedding(head_dim=8, patch_size=4, num_prefix_tokens=2, rotate_half=rotate_half)
        table = layer(_random((1, 8, 12, 3)))  # (8, 16)
        y = to_numpy(apply_rotary(x, table, rotate_half))
        np.testing.assert_array_equal(y[:, :, :2], x[:, :, :2])
        pairs = (
            (lambda a: np.stack([a[..., :4], a[..., 4:]], -1)) if rotate_half else (lambda a: a.reshape(2, 3, 8, 4, 2))
        )
        np.testing.assert_allclose(np.linalg.norm(pairs(y), axis=-1), np.linalg.norm(pairs(x), axis=-1), rtol=1e-5)
        assert not np.allclose(y[:, :, 2:], x[:, :, 2:])


def test_rotary_logits_depend_on_the_offset_between_patches_only(to_numpy):
    """RoPE's point (Su et al. 2021): with index coordinates, q.k of two patches sees only their displacement."""
    layer = RotaryEmbedding(head_dim=8, patch_size=1, coordinates="index", rotate_half=False)
    table = layer(_random((1, 4, 4, 1)))  # 16 patches, row-major
    q, k = np.broadcast_to(_random((8,)), (1, 1, 16, 8)), np.broadcast_to(_random((8,), 1), (1, 1, 16, 8))
    logits = to_numpy(apply_rotary(q, table, False))[0, 0] @ to_numpy(apply_rotary(k, table, False))[0, 0].T
    np.testing.assert_allclose(logits[0 * 4 + 0, 1 * 4 + 2], logits[2 * 4 + 1, 3 * 4 + 3], rtol=1e-4)  # both (+1, +2)
    assert not np.isclose(logits[0, 1 * 4 + 2], logits[0, 2 * 4 + 1])


def test_rotary_rows_follow_the_positions_of_moved_tokens(to_numpy):
    table = RotaryEmbedding(head_dim=8, patch_size=4, num_prefix_tokens=1)(_random((1, 8, 12, 3)))  # 7 tokens
    x = _random((2, 2, 7, 8))
    order = np.array([[0, 5, 2, 6], [0, 1, 4, 3]], "int32")  # each image keeps its own tokens, in its own order
    moved = np.take_along_axis(x, order[:, None, :, None], axis=2)
    expected = np.take_along_axis(to_numpy(apply_rotary(x, table)), order[:, None, :, None], axis=2)
    np.testing.assert_allclose(to_numpy(apply_rotary(moved, table, positions=order)), expected, rtol=1e-6)


def test_rotary_table_at_a_dynamic_size_equals_the_static_one(to_numpy):
    layer = RotaryEmbedding(head_dim=8, patch_size=4, num_prefix_tokens=1, coordinates="normalized")
    model = keras.Model(inputs := keras.Input((None, None, 3)), layer(inputs))
    images = _random((1, 12, 20, 3))
    np.testing.assert_allclose(to_numpy(model(images)), to_numpy(layer(images)), rtol=1e-6, atol=1e-7)
    assert to_numpy(model(images)).shape == (1 + 15, 16)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(head_dim=6), "head_dim=6 must be a multiple of 4"),
        (dict(coordinates="pixel"), "Unknown rotary coordinates='pixel'"),
        (dict(grid_indexing="yx"), "rotary grid_indexing='yx' must be 'ij' or 'xy'"),
        (dict(reference_grid=(16, 16)), "reference_grid rescales index coordinates"),
        (dict(temperature=0), "rotary temperature=0.0 must be positive"),
    ],
)
def test_rotary_embedding_rejects_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RotaryEmbedding(**{"head_dim": 8, "patch_size": 4, **kwargs})


def test_rms_norm_is_keras_own_and_computes_timms():
    norm = vit_layers.functions.make_norm("rmsnorm", 1e-5, "norm")
    assert type(norm) is keras.layers.RMSNormalization
    x = _random((3, 8))
    norm.build(x.shape)
    norm.scale.assign(_random((8,), 1))
    expected = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-5) * keras.ops.convert_to_numpy(norm.scale)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norm(x)), expected, rtol=1e-5)
