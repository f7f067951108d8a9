"""Model parallelism with `keras.distribution`: which device holds which slice of each ViT weight.

`get_layout_map(device_mesh)` follows keras-hub's convention (`model_parallel_dim_name="model"`,
`data_parallel_dim_name="batch"`) and Megatron-LM's split of a transformer block (Shoeybi et al.
2019): the query/key/value projection and the MLP's first Dense are split by output column, the
attention output and the MLP's second Dense by input row, so each block needs one all-reduce per
half. As keras-hub does, the other dimension of each kernel is split over the data axis as well
(the parameters, gradients and optimiser state are then sharded over every device, as in ZeRO-3 /
FSDP; XLA gathers a kernel before its matmul).

The keys are the model's layer roles (`patch_embedding`, `position_embedding`, `block_<i>/attention/
qkv`, `block_<i>/mlp_dense_1`, `head`, ...: the fixed sublayer names), not guesses at Keras' default
names: keras-hub users report layout maps whose regexes stopped matching after a rename, and every
kernel then silently stayed whole on every device. `check_layout(model, layout_map)` refuses that:
it raises when a variable above a size matches no role. Keras 3.15 distributes on JAX only.

Legend: `D` hidden_dim, `F` mlp_dim, `C` classes, `p` patch size.
"""

import math

import keras

# The variable roles a ViT has: (path regex, axes, its shape from the ViTConfig `c`); "model" and
# "data" stand for the mesh's axis names. A path matches at most one role (Keras' LayoutMap refuses
# a path that matches two keys). `check_layout` holds the table to the built model's variables.
_BLOCK = r"(^|/)block_\d+/"
_MAP = r"(^|/)map_pooling/"
ROLES = (
    (
        r"(^|/)patch_embedding/projection/kernel$",
        (None, None, None, "model"),
        lambda c: (*c.patch_size, c.num_channels, c.hidden_dim),
    ),
    (r"(^|/)position_embedding/embedding$", (None, None, "model"), lambda c: (1, c.num_tokens, c.hidden_dim)),
    (
        _BLOCK + r"attention/qkv/kernel$",
        ("data", "model"),
        lambda c: (c.hidden_dim, 3 * c.hidden_dim),
    ),  # column-parallel
    (_BLOCK + r"attention/qkv/bias$", ("model",), lambda c: (3 * c.hidden_dim,)),
    (_BLOCK + r"attention/output/kernel$", ("model", "data"), lambda c: (c.hidden_dim, c.hidden_dim)),  # row-parallel
    (_BLOCK + r"mlp_dense_1/kernel$", ("data", "model"), lambda c: (c.hidden_dim, c.mlp_dim)),  # column-parallel
    (_BLOCK + r"mlp_dense_1/bias$", ("model",), lambda c: (c.mlp_dim,)),
    (_BLOCK + r"mlp_dense_2/kernel$", ("model", "data"), lambda c: (c.mlp_dim, c.hidden_dim)),  # row-parallel
    # SigLIP's MAP head: its MLP has the blocks' mlp_dim; key_value is (D, 2D), the others (D, D).
    (_MAP + r"(query|key_value)/kernel$", ("data", "model"), lambda c: (c.hidden_dim, c.hidden_dim)),
    (_MAP + r"mlp_dense_1/kernel$", ("data", "model"), lambda c: (c.hidden_dim, c.mlp_dim)),
    (_MAP + r"(query|key_value|mlp_dense_1)/bias$", ("model",), lambda c: (c.hidden_dim,)),
    (_MAP + r"output/kernel$", ("model", "data"), lambda c: (c.hidden_dim, c.hidden_dim)),
    (_MAP + r"mlp_dense_2/kernel$", ("model", "data"), lambda c: (c.mlp_dim, c.hidden_dim)),
    (r"(^|/)pre_logits/kernel$", ("data", "model"), lambda c: (c.hidden_dim, c.representation_size or 0)),
    # (D or R, C): the classes are rarely a multiple of the mesh, so only the rows are split.
    (r"(^|/)head(_dist)?/kernel$", ("model", None), lambda c: (c.representation_size or c.hidden_dim, c.num_classes)),
)

# Variables of at least this many elements (1 MiB in float32) must be sharded: `check_layout`.
MIN_SHARDED_SIZE = 2**18


def get_layout_map(device_mesh, model_parallel_dim_name="model", data_parallel_dim_name="batch", *, config=None):
    """A `keras.distribution.LayoutMap` that shards a keras_vit model over `device_mesh`.

    Args:
        device_mesh: a `keras.distribution.DeviceMesh` whose axis names include
            `model_parallel_dim_name` (and `data_parallel_dim_name`, if the
            weights are to be sharded over the data axis as well).
        model_parallel_dim_name: the mesh axis that splits each layer's work.
            Defaults to `"model"`.
        data_parallel_dim_name: the mesh axis that splits the batch; the
            kernels' other dimension is sharded over it too. `None` (or an
            axis the mesh lacks) keeps that dimension whole. Defaults to
            `"batch"`.
        config: the model's `ViTConfig` (optional). With it, a dimension the
            mesh axis does not divide stays whole on that axis (JAX shards
            only evenly), and a variable of `MIN_SHARDED_SIZE` elements or more
            that would be left whole on every device raises a `ValueError`.

    Returns:
        A `LayoutMap` for `keras.distribution.ModelParallel(layout_map=...,
        batch_dim_name=data_parallel_dim_name)`; variables it does not name
        (LayerNorms, biases of row-parallel layers, tokens) are replicated.

    Example:
    ```python
    devices = keras.distribution.list_devices()  # 8
    mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), devices)
    distribution = keras.distribution.ModelParallel(
        layout_map=keras_vit.get_layout_map(mesh), batch_dim_name="batch"
    )
    with distribution.scope():
        model = keras_vit.build_vit("L/16", num_classes=10)
    keras_vit.check_layout(model)  # every big kernel sharded
    ```
    """
    names = tuple(device_mesh.axis_names)
    if model_parallel_dim_name not in names:
        raise ValueError(
            f"model_parallel_dim_name={model_parallel_dim_name!r} is not an axis of the device mesh {names}."
        )
    data = data_parallel_dim_name if data_parallel_dim_name in names else None
    axis = {"model": model_parallel_dim_name, "data": data, None: None}
    sizes = dict(zip(names, device_mesh.shape))
    layout_map = keras.distribution.LayoutMap(device_mesh)
    for pattern, roles, shape_of in ROLES:
        axes = tuple(axis[role] for role in roles)
        if config is not None:  # JAX shards a dimension only evenly: an axis that does not divide it is dropped
            shape = shape_of(config)
            axes = tuple(a if a is None or dim % sizes[a] == 0 else None for a, dim in zip(axes, shape))
            if math.prod(shape) >= MIN_SHARDED_SIZE and not any(axes):
                raise ValueError(
                    f"{pattern.removeprefix('(^|/)')} {shape} would be whole on every device: no axis of the mesh "
                    f"{sizes} divides it; choose a model-parallel size that divides hidden_dim={config.hidden_dim} "
                    f"and mlp_dim={config.mlp_dim}."
                )
        layout_map[pattern] = axes
    return layout_map


def check_layout(model, layout_map=None, min_size=MIN_SHARDED_SIZE):
    """Raises a `ValueError` naming every variable of `min_size` elements or more that stays whole.

    With `layout_map`, a variable is whole when no key matches its path or the layout names no
    axis; without, the layout of the current `keras.distribution` (or the variables' own JAX
    sharding) decides. A renamed layer is caught here rather than replicated in silence.
    Returns the number of sharded variables.
    """
    whole, sharded = [], 0
    for variable in model.variables:
        if math.prod(variable.shape) < min_size:
            continue
        if _is_sharded(variable, layout_map):
            sharded += 1
        else:
            whole.append(f"{variable.path} {tuple(variable.shape)}")
    if whole:
        raise ValueError(
            f"{len(whole)} large variables are replicated whole on every device (no layout role matches): "
            f"{', '.join(whole[:5])}{' ...' if len(whole) > 5 else ''}; keras_vit.get_layout_map knows the "
            "roles patch_embedding, position_embedding, block_<i>/attention|mlp_dense_<1|2>, map_pooling, "
            "pre_logits and head."
        )
    return sharded


def _is_sharded(variable, layout_map):
    if layout_map is not None:
        layout = layout_map[variable.path]
        return layout is not None and any(layout.axes)
    sharding = getattr(variable.value, "sharding", None)  # a jax.Array's
    if sharding is not None:
        return not sharding.is_fully_replicated
    distribution = keras.distribution.distribution()
    layout = distribution.get_variable_layout(variable) if distribution is not None else None
    return layout is not None and any(layout.axes)
