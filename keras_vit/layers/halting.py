"""The layers of adaptive tokens (A-ViT, Yin et al., CVPR 2022): halting after each block, and its losses.

    model = keras_vit.build_vit("Ti/16", adaptive_tokens=True)   # model.fit adds the two losses

After every block each token gets a halting score from its first channel,
`h = sigmoid(gate_scale * x[0] - gate_center)` (no new weights). Scores add up
per token; once a token's sum reaches `1 - eps` it halts: later blocks mask it
out of attention (a -1000 logits bias on its key, as the authors' code) and
leave it unchanged. Each token's output is the sum of its block outputs
weighted by its scores, the last one by the remainder `R = 1 - sum of earlier
scores` (Graves' ACT); the head reads the class token's. Training adds

    ponder loss        alpha_p * mean over tokens of (blocks run + R)
    distribution prior alpha_d * KL(target || mean score per block, normalised)

The numbers are those of the authors' code (github.com/NVlabs/A-ViT): `eps`
0.01 (`act_vision_transformer.py`); `gate_scale` 10, `gate_center` 30,
`alpha_p` 5e-4, `alpha_d` 1e-3 from the README's A-ViT-T command (the run of
the released `tiny-10-30` weights); the target, a unit Gaussian over the
blocks centred on block 8 of 12, scaled so that the blocks before it sum to
0.98 (`utils.get_distribution_target`).

This module holds the layers and the arithmetic: `halting_step` is the one
halting step, which the masked graph (`Halting`, what `build_model` wires in
through `keras_vit.model.HaltingHook`) and the batch-1 path that really drops
halted tokens (`keras_vit.views.adaptive`) both run.

Legend: `B` batch, `T` tokens, `D` hidden_dim, `L` blocks.
"""

import math

import keras
from keras import ops

EPS = 0.01  # a token halts when its summed scores reach 1 - EPS (the authors' `self.eps`)
MASK_BIAS = -1000.0  # the authors' `masked_softmax_bias`: exp(-1000) is exactly 0 in float32, finite in float16
# The per-token state carried from block to block, one (B, T) slice each of a (B, T, 5) tensor.
SCORE_SUM, REMAINDER, ACTIVE, PONDER, DEPTH = range(5)

_register = keras.saving.register_keras_serializable(package="keras_vit")


def default_target_depth(num_layers):
    """The block the target distribution centres on: the authors' 8 of 12, scaled to the depth."""
    return max(1, min(num_layers, round(num_layers * 8 / 12)))


def target_distribution(num_layers, target_depth=None, buffer=0.02):
    """The authors' `get_distribution_target`: `N(target_depth, 1)` at blocks `0..L-1`, rescaled.

    The blocks before `target_depth` sum to `1 - buffer`; the whole is not
    normalised (it sums to about 3 for 12 blocks), as in their code, whose
    coefficient `alpha_d` was tuned with it.
    """
    depth = target_depth or default_target_depth(num_layers)
    pdf = [math.exp(-0.5 * (block - depth) ** 2) / math.sqrt(2 * math.pi) for block in range(num_layers)]
    scale = (1 - buffer) / sum(pdf[:depth])
    return [value * scale for value in pdf]


def halting_step(x0, score_sum, remainder, active, gate_scale, gate_center, last):
    """One block's halting arithmetic, on `(B, T)` float32 tensors; the masked and gathered paths share it.

    Args:
        x0: each token's first channel after the block (zero for a halted token).
        score_sum, remainder: the summed scores and the remainder `R` so far.
        active: 1 where the token still runs (the gathered path keeps active tokens only: ones).
        gate_scale, gate_center: the gate `sigmoid(gate_scale * x0 - gate_center)`.
        last: after the last block every token halts (`h = 1`).

    Returns:
        `(gate, going, weight, score_sum, remainder)`: the gate (the prior
        reads its mean), 1 where the token still runs after this block, what
        this block's output counts in the token's output (`h` while it goes
        on, the remainder at its halt, 0 once halted), and the new sums.
    """
    gate = ops.sigmoid(x0 * gate_scale - gate_center)
    h = ops.ones_like(gate) if last else gate
    score_sum = score_sum + h
    # The authors test `> 1 - eps` and `< 1 - eps`; one test keeps every token on one side.
    going = 1.0 - ops.cast(score_sum >= 1.0 - EPS, "float32")  # still active after this block
    halting = active * (1.0 - going)  # halts here: its output gets the remainder
    weight = halting * remainder + going * h
    return gate, going, weight, score_sum, remainder - going * h


@_register
class Halting(keras.layers.Layer):
    """A-ViT's step after one block: halting scores, the weighted output, the halted tokens masked.

    Args:
        gate_scale: `s` in `h = sigmoid(s * x[0] - c)`. Defaults to `10.0`.
        gate_center: `c`. Defaults to `30.0`.
        last: whether this follows the last block, where every token halts
            (`h = 1`). Defaults to `False`.

    Call arguments:
        tokens: `(B, T, D)`, the block's output.
        output: `(B, T, D)` float32, the weighted sum so far, or `None` after the first block.
        state: `(B, T, 5)` float32 (`SCORE_SUM, REMAINDER, ACTIVE, PONDER,
            DEPTH`), or `None` after the first block.

    Returns:
        `(tokens, attention_bias, output, state, mean_score)`: the next
        block's input `(B, T, D)` (halted tokens zeroed), its attention bias
        `(B, 1, 1, T)`, the new output and state, and the mean halting score
        of each image `(B,)`, for the distribution prior.
    """

    def __init__(self, gate_scale=10.0, gate_center=30.0, last=False, **kwargs):
        super().__init__(**kwargs)
        self.gate_scale = float(gate_scale)
        self.gate_center = float(gate_center)
        self.last = bool(last)

    def call(self, tokens, output=None, state=None):
        x = ops.cast(tokens, "float32")  # scores and sums in float32 under mixed precision
        if state is None:  # after the first block: nothing summed, every token active, one block run
            zeros = ops.zeros_like(x[..., 0])
            state = ops.stack([zeros, zeros + 1, zeros + 1, zeros, zeros + 1], axis=-1)
            output = ops.zeros_like(x)
        score_sum, remainder, active, ponder, depth = ops.unstack(state, 5, axis=-1)  # (B, T) each
        x = x * active[..., None]  # a halted token's row is not its output any more
        gate, going, weight, score_sum, new_remainder = halting_step(
            x[..., 0], score_sum, remainder, active, self.gate_scale, self.gate_center, self.last
        )
        output = output + x * weight[..., None]
        ponder = ponder + active + active * (1.0 - going) * remainder  # rho = blocks run + remainder at the halt
        state = ops.stack([score_sum, new_remainder, going, ponder, depth + going], axis=-1)
        bias = (1.0 - going)[:, None, None, :] * MASK_BIAS  # (B, 1, 1, T): halted keys out of attention
        next_tokens = tokens * ops.cast(going, tokens.dtype)[..., None]
        return next_tokens, bias, output, state, ops.mean(gate, axis=1)

    def get_config(self):
        return {
            **super().get_config(),
            "gate_scale": self.gate_scale,
            "gate_center": self.gate_center,
            "last": self.last,
        }


@_register
class HaltingLoss(keras.layers.Layer):
    """Adds A-ViT's ponder loss and distribution prior (`add_loss`); passes the output on.

    Args:
        ponder_loss_weight: `alpha_p`. Defaults to `5e-4`.
        distribution_prior_weight: `alpha_d`. Defaults to `1e-3`.
        target_depth: where the target distribution centres (`target_distribution`),
            or `None` for the default of the depth. Defaults to `None`.

    Call arguments:
        output: `(B, T, D)`, the halting-weighted tokens.
        state: `(B, T, 5)`, the last `Halting`'s state.
        mean_scores: one `(B,)` per block, each `Halting`'s mean score.

    Returns:
        `(output, depth)`: the output unchanged and the `(B, T)` number of
        blocks each token ran through.
    """

    def __init__(self, ponder_loss_weight=5e-4, distribution_prior_weight=1e-3, target_depth=None, **kwargs):
        super().__init__(**kwargs)
        self.ponder_loss_weight = float(ponder_loss_weight)
        self.distribution_prior_weight = float(distribution_prior_weight)
        self.target_depth = target_depth

    def call(self, output, state, mean_scores):
        ponder, distribution = halting_losses(
            state, mean_scores, self.ponder_loss_weight, self.distribution_prior_weight, self.target_depth
        )
        self.add_loss(ponder + distribution)
        return output, state[..., DEPTH]

    def get_config(self):
        return {
            **super().get_config(),
            "ponder_loss_weight": self.ponder_loss_weight,
            "distribution_prior_weight": self.distribution_prior_weight,
            "target_depth": self.target_depth,
        }


def halting_losses(state, mean_scores, ponder_loss_weight, distribution_prior_weight, target_depth=None):
    """`(ponder loss, distribution prior)`, each already weighted, as the authors' training loop.

    Ponder: `alpha_p * mean(rho)` over images and tokens. Prior: the mean
    score of each block (over images and tokens, before the last block's
    forced 1), normalised over blocks and clipped to [0.01, 0.99], against
    the target by `KL(target || scores)`, divided by the number of blocks
    (PyTorch's `KLDivLoss(reduction="batchmean")` on their 1-D tensor) and
    dropped when not positive (their `if distr_prior_loss > 0`; the target is
    not normalised, so the KL can be negative). Their per-block mean slices
    `[1:]` off the batch axis, presumably meant for the class token; this
    averages every image and token. Theirs also scores halted tokens from
    the block's output for their zeroed input (not zero, with a gradient);
    `Halting` zeroes a halted token's channel first, so it adds
    `sigmoid(-gate_center)`, a constant (docs/training.md, adaptive tokens).
    """
    ponder = ponder_loss_weight * ops.mean(state[..., PONDER])
    scores = ops.mean(ops.stack(mean_scores), axis=1)  # (L,)
    scores = ops.clip(scores / ops.sum(scores), 0.01, 0.99)
    target = ops.convert_to_tensor(target_distribution(len(mean_scores), target_depth), "float32")
    kl = ops.sum(target * (ops.log(target) - ops.log(scores))) / len(mean_scores)
    return ponder, distribution_prior_weight * ops.maximum(kl, 0.0)
