r"""Optimizers with weight decay coupled into the gradient or decoupled from it.

Every optimizer here is an Optax chain, and the position of
``optax.add_decayed_weights`` in the chain is what tells the two kinds apart:

* Coupled (``sgd``, ``adam``, ``signum``): the decay term :math:`\lambda w` is
  added to the gradient *before* the momentum, Adam or sign block, so it is
  averaged, rescaled or signed together with the gradient.
* Decoupled (``sgdw``, ``adamw``, ``signumw``): :math:`\lambda w` is added
  *after* that block, next to the step it produced.
* Mixes (``sgd_sgdw``, ``adam_adamw``, ``signum_signumw``): a part
  :math:`\lambda_c` of the decay is added before the block and the rest,
  :math:`\lambda - \lambda_c`, after it. ``split_decay_optimizer`` builds
  a family's mix from the share :math:`\lambda_c / \lambda`.

In every case the learning rate (constant or scheduled) multiplies the whole
update, decay included, as in PyTorch's ``SGD``, ``Adam`` and ``AdamW``.

For a softmax cross-entropy loss the gradient with respect to the classifier
``W`` has columns that sum to zero, so the gradient alone never changes
``W^T 1``. How the decay term reaches the update therefore decides whether
``W^T 1`` is driven to zero, which neural collapse requires.

Hyperparameters may be Python numbers or JAX arrays, traced ones included, so
a grid of settings can be run under ``jax.vmap``. Only Python numbers (and
numpy scalars) are range-checked.
"""

from collections.abc import Callable
import numbers
from typing import Any, NamedTuple

import jax
import optax

# A pytree of booleans with the structure of the parameters (or a prefix of it),
# or a function of the parameters that returns one. True marks leaves that decay.
MaskOrFn = Any | Callable[[optax.Params], Any] | None


def _is_python_number(value: Any) -> bool:
    # JAX arrays and tracers are not numbers.Real, so traced hyperparameters
    # skip the range checks, which would need their concrete values.
    return isinstance(value, numbers.Real)


def _check_nonnegative(name: str, value: Any) -> None:
    # "not >= 0" also rejects NaN.
    if _is_python_number(value) and not value >= 0:
        raise ValueError(f"{name}={value} is invalid; expected a value >= 0")


def _check_in_unit_interval(name: str, value: Any) -> None:
    if _is_python_number(value) and not 0 <= value < 1:
        raise ValueError(f"{name}={value} is invalid; expected a value in [0, 1)")


def validate_hyperparameters(
    *,
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike,
    weight_decay: jax.typing.ArrayLike,
    coupled_weight_decay: jax.typing.ArrayLike | None = None,
) -> None:
    """Check the ranges of hyperparameters given as Python or numpy numbers.

    JAX arrays (traced or not) and learning-rate schedules are not checked.

    Args:
        learning_rate: must be >= 0.
        momentum: momentum or Adam's ``b1``, must be in [0, 1).
        weight_decay: total decay, must be >= 0.
        coupled_weight_decay: the share of ``weight_decay`` added to the
            gradient, must be in [0, weight_decay]; ``None`` skips the check.

    Raises:
        ValueError: naming the first invalid value and its accepted range.
    """
    if not callable(learning_rate):
        _check_nonnegative("learning_rate", learning_rate)
    _check_in_unit_interval("momentum", momentum)
    _check_nonnegative("weight_decay", weight_decay)
    if coupled_weight_decay is None:
        return
    _check_nonnegative("coupled_weight_decay", coupled_weight_decay)
    both_numbers = _is_python_number(coupled_weight_decay) and _is_python_number(weight_decay)
    if both_numbers and coupled_weight_decay > weight_decay:
        raise ValueError(
            f"coupled_weight_decay={coupled_weight_decay} is invalid; expected a value in"
            f" [0, weight_decay={weight_decay}]"
        )


def _validate_adam_constants(b2: jax.typing.ArrayLike, eps: jax.typing.ArrayLike) -> None:
    _check_in_unit_interval("b2", b2)
    _check_nonnegative("eps", eps)


def sgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 0.0,
    *,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""SGD with heavy-ball momentum and coupled weight decay.

    .. math::

        v_t = \mu v_{t-1} + (g_t + \lambda w_{t-1}), \qquad
        w_t = w_{t-1} - \eta_t v_t,

    with :math:`v_0 = 0`. This is PyTorch's ``torch.optim.SGD`` with
    ``dampening=0`` and ``nesterov=False``.

    Args:
        learning_rate: :math:`\eta`, a constant or an ``optax.Schedule``.
        momentum: :math:`\mu`; 0 gives plain gradient descent.
        weight_decay: :math:`\lambda`.
        mask: selects the parameters that decay (all by default), as in
            ``optax.add_decayed_weights``.

    Returns:
        The chain ``add_decayed_weights -> trace -> scale_by_learning_rate``.
    """
    validate_hyperparameters(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay)
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask),
        optax.trace(decay=momentum),
        optax.scale_by_learning_rate(learning_rate),
    )


def sgdw(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 0.0,
    *,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""SGD with heavy-ball momentum and decoupled weight decay.

    .. math::

        v_t = \mu v_{t-1} + g_t, \qquad
        w_t = w_{t-1} - \eta_t (v_t + \lambda w_{t-1}),

    with :math:`v_0 = 0`. The decay never enters the momentum buffer.

    Args:
        learning_rate: :math:`\eta`, a constant or an ``optax.Schedule``.
        momentum: :math:`\mu`; 0 gives plain gradient descent.
        weight_decay: :math:`\lambda`.
        mask: selects the parameters that decay (all by default), as in
            ``optax.add_decayed_weights``.

    Returns:
        The chain ``trace -> add_decayed_weights -> scale_by_learning_rate``.
    """
    validate_hyperparameters(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay)
    return optax.chain(
        optax.trace(decay=momentum),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def adam(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.9,
    weight_decay: jax.typing.ArrayLike = 0.0,
    *,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam with coupled weight decay (an L2 term in the gradient).

    With :math:`\tilde g_t = g_t + \lambda w_{t-1}` and :math:`\beta_1` the
    ``momentum``:

    .. math::

        m_t = \beta_1 m_{t-1} + (1 - \beta_1) \tilde g_t, \qquad
        s_t = \beta_2 s_{t-1} + (1 - \beta_2) \tilde g_t^2,

        \hat m_t = m_t / (1 - \beta_1^t), \qquad
        \hat s_t = s_t / (1 - \beta_2^t), \qquad
        w_t = w_{t-1} - \eta_t \hat m_t / (\sqrt{\hat s_t} + \epsilon).

    This is PyTorch's ``torch.optim.Adam`` with ``weight_decay > 0``.
    ``momentum=0, b2=0`` gives the update
    :math:`-\eta_t \tilde g_t / (|\tilde g_t| + \epsilon)`, close to sign
    descent with coupled decay; the bias corrections are then 1, not 0/0.

    Args:
        learning_rate: :math:`\eta`, a constant or an ``optax.Schedule``.
        momentum: :math:`\beta_1`, in [0, 1).
        weight_decay: :math:`\lambda`.
        b2: :math:`\beta_2`, in [0, 1).
        eps: :math:`\epsilon`, added outside the square root.
        mask: selects the parameters that decay (all by default), as in
            ``optax.add_decayed_weights``.

    Returns:
        The chain ``add_decayed_weights -> scale_by_adam -> scale_by_learning_rate``.
    """
    validate_hyperparameters(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay)
    _validate_adam_constants(b2, eps)
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_adam(b1=momentum, b2=b2, eps=eps),
        optax.scale_by_learning_rate(learning_rate),
    )


def adamw(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.9,
    weight_decay: jax.typing.ArrayLike = 0.0,
    *,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam with decoupled weight decay (AdamW).

    With :math:`\beta_1` the ``momentum`` and :math:`\hat m_t, \hat s_t` the
    bias-corrected moments of :math:`g_t` alone (as in :func:`adam`):

    .. math::

        w_t = w_{t-1} - \eta_t \left( \hat m_t / (\sqrt{\hat s_t} + \epsilon)
              + \lambda w_{t-1} \right).

    This is PyTorch's ``torch.optim.AdamW`` and ``optax.adamw``: the decay is
    multiplied by the full scheduled learning rate.
    ``momentum=0, b2=0`` gives :math:`-\eta_t (g_t / (|g_t| + \epsilon) +
    \lambda w_{t-1})`, close to sign descent with decoupled decay.

    Args:
        learning_rate: :math:`\eta`, a constant or an ``optax.Schedule``.
        momentum: :math:`\beta_1`, in [0, 1).
        weight_decay: :math:`\lambda`.
        b2: :math:`\beta_2`, in [0, 1).
        eps: :math:`\epsilon`, added outside the square root.
        mask: selects the parameters that decay (all by default), as in
            ``optax.add_decayed_weights``.

    Returns:
        The chain ``scale_by_adam -> add_decayed_weights -> scale_by_learning_rate``.
    """
    validate_hyperparameters(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay)
    _validate_adam_constants(b2, eps)
    return optax.chain(
        optax.scale_by_adam(b1=momentum, b2=b2, eps=eps),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def signum(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.9,
    weight_decay: jax.typing.ArrayLike = 0.0,
    *,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Signum (sign of an exponential moving average) with coupled weight decay.

    .. math::

        m_t = \beta m_{t-1} + (1 - \beta) (g_t + \lambda w_{t-1}), \qquad
        w_t = w_{t-1} - \eta_t \operatorname{sign}(m_t),

    with :math:`m_0 = 0` and no bias correction, which cannot change a sign.
    ``momentum=0`` gives sign descent on :math:`g_t + \lambda w_{t-1}`.
    Signum is from Bernstein et al., "signSGD: Compressed Optimization for
    Non-Convex Problems" (2018).

    Args:
        learning_rate: :math:`\eta`, a constant or an ``optax.Schedule``.
        momentum: :math:`\beta`, in [0, 1).
        weight_decay: :math:`\lambda`.
        mask: selects the parameters that decay (all by default), as in
            ``optax.add_decayed_weights``.

    Returns:
        The chain ``add_decayed_weights -> ema -> scale_by_sign -> scale_by_learning_rate``.
    """
    validate_hyperparameters(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay)
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask),
        optax.ema(decay=momentum, debias=False),
        optax.scale_by_sign(),
        optax.scale_by_learning_rate(learning_rate),
    )


def signumw(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.9,
    weight_decay: jax.typing.ArrayLike = 0.0,
    *,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Signum with decoupled weight decay.

    .. math::

        m_t = \beta m_{t-1} + (1 - \beta) g_t, \qquad
        w_t = w_{t-1} - \eta_t \left( \operatorname{sign}(m_t) + \lambda w_{t-1} \right),

    with :math:`m_0 = 0`. ``momentum=0`` gives sign descent with decoupled
    decay. Unlike :func:`signum`, the decay term is not signed, so its size
    does not saturate at :math:`\eta_t`.

    Args:
        learning_rate: :math:`\eta`, a constant or an ``optax.Schedule``.
        momentum: :math:`\beta`, in [0, 1).
        weight_decay: :math:`\lambda`.
        mask: selects the parameters that decay (all by default), as in
            ``optax.add_decayed_weights``.

    Returns:
        The chain ``ema -> scale_by_sign -> add_decayed_weights -> scale_by_learning_rate``.
    """
    validate_hyperparameters(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay)
    return optax.chain(
        optax.ema(decay=momentum, debias=False),
        optax.scale_by_sign(),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def adam_adamw(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.9,
    weight_decay: jax.typing.ArrayLike = 0.0,
    coupled_weight_decay: jax.typing.ArrayLike = 0.0,
    *,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam with the weight decay split into a coupled and a decoupled part.

    The coupled part :math:`\lambda_c` enters the Adam moments and the rest,
    :math:`\lambda - \lambda_c`, is added after the Adam step. With
    :math:`\hat m_t, \hat s_t` the bias-corrected moments of
    :math:`g_t + \lambda_c w_{t-1}`:

    .. math::

        w_t = w_{t-1} - \eta_t \left( \hat m_t / (\sqrt{\hat s_t} + \epsilon)
              + (\lambda - \lambda_c) w_{t-1} \right).

    ``coupled_weight_decay=0`` is :func:`adamw` and
    ``coupled_weight_decay=weight_decay`` is :func:`adam`.

    Args:
        learning_rate: :math:`\eta`, a constant or an ``optax.Schedule``.
        momentum: :math:`\beta_1`, in [0, 1).
        weight_decay: :math:`\lambda`, the total decay.
        coupled_weight_decay: :math:`\lambda_c`, in [0, weight_decay].
        b2: :math:`\beta_2`, in [0, 1).
        eps: :math:`\epsilon`, added outside the square root.
        mask: selects the parameters that decay (all by default), for both
            parts, as in ``optax.add_decayed_weights``.

    Returns:
        The chain ``add_decayed_weights -> scale_by_adam -> add_decayed_weights
        -> scale_by_learning_rate``.
    """
    validate_hyperparameters(
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        coupled_weight_decay=coupled_weight_decay,
    )
    _validate_adam_constants(b2, eps)
    decoupled_weight_decay = weight_decay - coupled_weight_decay
    return optax.chain(
        optax.add_decayed_weights(coupled_weight_decay, mask),
        optax.scale_by_adam(b1=momentum, b2=b2, eps=eps),
        optax.add_decayed_weights(decoupled_weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def sgd_sgdw(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 0.0,
    coupled_weight_decay: jax.typing.ArrayLike = 0.0,
    *,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""SGD with the weight decay split into a coupled and a decoupled part.

    The coupled part :math:`\lambda_c` enters the momentum buffer and the
    rest, :math:`\lambda - \lambda_c`, is added after it:

    .. math::

        v_t = \mu v_{t-1} + (g_t + \lambda_c w_{t-1}), \qquad
        w_t = w_{t-1} - \eta_t \left( v_t + (\lambda - \lambda_c) w_{t-1} \right),

    with :math:`v_0 = 0`. ``coupled_weight_decay=0`` is :func:`sgdw` and
    ``coupled_weight_decay=weight_decay`` is :func:`sgd`.

    Args:
        learning_rate: :math:`\eta`, a constant or an ``optax.Schedule``.
        momentum: :math:`\mu`; 0 gives plain gradient descent.
        weight_decay: :math:`\lambda`, the total decay.
        coupled_weight_decay: :math:`\lambda_c`, in [0, weight_decay].
        mask: selects the parameters that decay (all by default), for both
            parts, as in ``optax.add_decayed_weights``.

    Returns:
        The chain ``add_decayed_weights -> trace -> add_decayed_weights
        -> scale_by_learning_rate``.
    """
    validate_hyperparameters(
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        coupled_weight_decay=coupled_weight_decay,
    )
    decoupled_weight_decay = weight_decay - coupled_weight_decay
    return optax.chain(
        optax.add_decayed_weights(coupled_weight_decay, mask),
        optax.trace(decay=momentum),
        optax.add_decayed_weights(decoupled_weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def signum_signumw(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.9,
    weight_decay: jax.typing.ArrayLike = 0.0,
    coupled_weight_decay: jax.typing.ArrayLike = 0.0,
    *,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Signum with the weight decay split into a coupled and a decoupled part.

    The coupled part :math:`\lambda_c` enters the moving average, and so the
    sign, while the rest, :math:`\lambda - \lambda_c`, is added unsigned
    after it:

    .. math::

        m_t = \beta m_{t-1} + (1 - \beta) (g_t + \lambda_c w_{t-1}), \qquad
        w_t = w_{t-1} - \eta_t \left( \operatorname{sign}(m_t)
              + (\lambda - \lambda_c) w_{t-1} \right),

    with :math:`m_0 = 0`. ``coupled_weight_decay=0`` is :func:`signumw` and
    ``coupled_weight_decay=weight_decay`` is :func:`signum`.

    Args:
        learning_rate: :math:`\eta`, a constant or an ``optax.Schedule``.
        momentum: :math:`\beta`, in [0, 1).
        weight_decay: :math:`\lambda`, the total decay.
        coupled_weight_decay: :math:`\lambda_c`, in [0, weight_decay].
        mask: selects the parameters that decay (all by default), for both
            parts, as in ``optax.add_decayed_weights``.

    Returns:
        The chain ``add_decayed_weights -> ema -> scale_by_sign ->
        add_decayed_weights -> scale_by_learning_rate``.
    """
    validate_hyperparameters(
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        coupled_weight_decay=coupled_weight_decay,
    )
    decoupled_weight_decay = weight_decay - coupled_weight_decay
    return optax.chain(
        optax.add_decayed_weights(coupled_weight_decay, mask),
        optax.ema(decay=momentum, debias=False),
        optax.scale_by_sign(),
        optax.add_decayed_weights(decoupled_weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def step_decay_schedule(
    learning_rate: jax.typing.ArrayLike,
    total_epochs: int,
    steps_per_epoch: int,
    factor: float = 0.1,
) -> optax.Schedule:
    """Build a step-decay schedule that scales the learning rate twice by ``factor``.

    The first drop is at epoch ``total_epochs // 3`` and the second at epoch
    ``2 * total_epochs // 3``, each at the first step of that epoch, so the
    schedule matches ``torch.optim.lr_scheduler.MultiStepLR`` stepped once per
    epoch with those milestones. With 200 epochs and the default factor the
    rate drops 10x at epochs 66 and 133.

    NOTE: with fewer than 3 epochs the first drop (and with 1 epoch both) falls
    at step 0, so training starts at the reduced rate.

    Args:
        learning_rate: the rate before the first drop.
        total_epochs: number of training epochs, >= 1.
        steps_per_epoch: optimizer steps per epoch, >= 1.
        factor: multiplier applied at each drop, > 0.

    Returns:
        An ``optax.Schedule`` mapping the step count (from 0) to the rate.

    Raises:
        ValueError: naming the invalid argument and its accepted range.
    """
    _check_nonnegative("learning_rate", learning_rate)
    if total_epochs < 1:
        raise ValueError(f"total_epochs={total_epochs} is invalid; expected an integer >= 1")
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch={steps_per_epoch} is invalid; expected an integer >= 1")
    if not factor > 0:
        raise ValueError(f"factor={factor} is invalid; expected a value > 0")

    first_drop = (total_epochs // 3) * steps_per_epoch
    second_drop = (2 * total_epochs // 3) * steps_per_epoch
    # Drops that fall on the same step multiply, because a dict keeps one
    # scale per step.
    boundaries_and_scales: dict[int, float] = {}
    for boundary in (first_drop, second_drop):
        boundaries_and_scales[boundary] = boundaries_and_scales.get(boundary, 1.0) * factor
    return optax.piecewise_constant_schedule(learning_rate, boundaries_and_scales)


def warmup_cosine_schedule(
    peak_learning_rate: jax.typing.ArrayLike,
    total_steps: int,
    *,
    warmup_fraction: float = 0.05,
    initial_learning_rate: jax.typing.ArrayLike = 1e-7,
    final_learning_rate: jax.typing.ArrayLike = 1e-5,
) -> optax.Schedule:
    r"""Build a linear warm-up followed by a cosine decay, the study's ViT schedule.

    With :math:`W` = ``round(warmup_fraction * total_steps)`` warm-up steps,
    :math:`T` = ``total_steps``, :math:`\eta_0, \eta_{max}, \eta_{end}` the
    initial, peak and final rates, and step :math:`t` counted from 0:

    .. math::

        \eta_t = \eta_0 + (\eta_{max} - \eta_0) \, t / W
            \quad (t < W), \qquad
        \eta_t = \eta_{end} + (\eta_{max} - \eta_{end}) \,
            \tfrac{1}{2} \left(1 + \cos \frac{\pi \min(t - W, T - W)}{T - W}\right)
            \quad (t \ge W).

    The rate is :math:`\eta_{max}` at step :math:`W` and :math:`\eta_{end}`
    from step :math:`T` on. This is ``optax.warmup_cosine_decay_schedule``
    built from its two parts, because that function branches on
    ``peak_value == 0`` in Python and so rejects a traced peak rate.

    NOTE: :math:`W` is capped at ``total_steps - 1`` so that the cosine part
    has at least one step.

    Args:
        peak_learning_rate: :math:`\eta_{max}`, > 0; may be a traced scalar.
        total_steps: :math:`T`, the number of optimizer steps, >= 1.
        warmup_fraction: share of the steps spent warming up, in [0, 1).
        initial_learning_rate: :math:`\eta_0`, the rate at step 0, >= 0.
        final_learning_rate: :math:`\eta_{end}`, >= 0.

    Returns:
        An ``optax.Schedule`` mapping the step count (from 0) to the rate.

    Raises:
        ValueError: naming the invalid argument and its accepted range.
    """
    if _is_python_number(peak_learning_rate) and not peak_learning_rate > 0:
        raise ValueError(f"peak_learning_rate={peak_learning_rate} is invalid; expected a value > 0")
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps={total_steps!r} is invalid; expected an integer >= 1")
    if not 0 <= warmup_fraction < 1:
        raise ValueError(f"warmup_fraction={warmup_fraction} is invalid; expected a value in [0, 1)")
    _check_nonnegative("initial_learning_rate", initial_learning_rate)
    _check_nonnegative("final_learning_rate", final_learning_rate)

    warmup_steps = min(round(warmup_fraction * total_steps), total_steps - 1)
    cosine = optax.cosine_decay_schedule(
        init_value=peak_learning_rate,
        decay_steps=total_steps - warmup_steps,
        alpha=final_learning_rate / peak_learning_rate,
    )
    if warmup_steps == 0:
        return cosine
    warmup = optax.linear_schedule(
        init_value=initial_learning_rate,
        end_value=peak_learning_rate,
        transition_steps=warmup_steps,
    )
    return optax.join_schedules([warmup, cosine], boundaries=[warmup_steps])


def with_gradient_clipping(
    tx: optax.GradientTransformation,
    max_norm: jax.typing.ArrayLike = 1.0,
) -> optax.GradientTransformationExtraArgs:
    """Clip the gradient to a global L2 norm of ``max_norm`` before ``tx`` runs.

    Only the gradient is clipped: a decay term that ``tx`` adds, coupled or
    decoupled, is added after the clipping, as with PyTorch's
    ``clip_grad_norm_`` called before ``optimizer.step()``.

    Args:
        tx: any Optax transformation, such as one of ``OPTIMIZERS``.
        max_norm: the largest global L2 norm of the gradient, > 0.

    Returns:
        The chain ``clip_by_global_norm -> tx``.

    Raises:
        ValueError: if ``max_norm`` is a Python number <= 0.
    """
    if _is_python_number(max_norm) and not max_norm > 0:
        raise ValueError(f"max_norm={max_norm} is invalid; expected a value > 0")
    return optax.chain(optax.clip_by_global_norm(max_norm), tx)


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformationExtraArgs]] = {
    "sgd": sgd,
    "sgdw": sgdw,
    "adam": adam,
    "adamw": adamw,
    "signum": signum,
    "signumw": signumw,
    "adam_adamw": adam_adamw,
    "sgd_sgdw": sgd_sgdw,
    "signum_signumw": signum_signumw,
}

MIX_OPTIMIZERS = ("adam_adamw", "sgd_sgdw", "signum_signumw")
"""Names in ``OPTIMIZERS`` that take ``coupled_weight_decay``."""

FAMILIES: dict[str, tuple[str, float]] = {
    "sgd": ("sgd_sgdw", 1.0),
    "sgdw": ("sgd_sgdw", 0.0),
    "adam": ("adam_adamw", 1.0),
    "adamw": ("adam_adamw", 0.0),
    "signum": ("signum_signumw", 1.0),
    "signumw": ("signum_signumw", 0.0),
}
"""For each coupled or decoupled optimizer, its mix and the coupled share of
the decay at which the mix reduces to it."""


def create_optimizer(
    name: str,
    *,
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike,
    weight_decay: jax.typing.ArrayLike,
    coupled_weight_decay: jax.typing.ArrayLike | None = None,
    mask: MaskOrFn = None,
    **options: Any,
) -> optax.GradientTransformationExtraArgs:
    """Build the optimizer registered under ``name`` in ``OPTIMIZERS``.

    Args:
        name: one of the keys of ``OPTIMIZERS``.
        learning_rate: a constant or an ``optax.Schedule``.
        momentum: momentum, or ``b1`` for the Adam variants.
        weight_decay: total weight decay.
        coupled_weight_decay: only for the names in ``MIX_OPTIMIZERS``, the
            coupled part of ``weight_decay``; ``None`` there means 0, the
            decoupled optimizer.
        mask: selects the parameters that decay (all by default).
        **options: further keyword arguments of the constructor, such as
            ``b2`` and ``eps`` for the Adam variants.

    Returns:
        The optimizer's ``optax.GradientTransformation``.

    Raises:
        ValueError: for an unknown name, for ``coupled_weight_decay`` given
            to an optimizer outside ``MIX_OPTIMIZERS``, or for a
            hyperparameter out of range.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of: {', '.join(OPTIMIZERS)}")
    if coupled_weight_decay is not None:
        if name not in MIX_OPTIMIZERS:
            raise ValueError(
                f"coupled_weight_decay={coupled_weight_decay} is invalid for optimizer {name!r};"
                f" it applies only to {', '.join(map(repr, MIX_OPTIMIZERS))}"
            )
        options["coupled_weight_decay"] = coupled_weight_decay
    constructor = OPTIMIZERS[name]
    return constructor(
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        mask=mask,
        **options,
    )


def split_decay_optimizer(
    name: str,
    *,
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike,
    weight_decay: jax.typing.ArrayLike,
    coupled_share: jax.typing.ArrayLike | None = None,
    **options: Any,
) -> optax.GradientTransformationExtraArgs:
    """Build the mix of optimizer ``name``'s family with a chosen coupled share.

    The returned chain is the family's mix (``sgd_sgdw``, ``adam_adamw`` or
    ``signum_signumw``) with ``coupled_weight_decay = coupled_share *
    weight_decay``. Every hyperparameter, the share included, may be a traced
    scalar, so one compiled program can sweep from coupled to decoupled decay.

    Args:
        name: a key of ``FAMILIES`` or a name in ``MIX_OPTIMIZERS``.
        learning_rate: a constant or an ``optax.Schedule``.
        momentum: momentum, or ``b1`` for the Adam family.
        weight_decay: total weight decay.
        coupled_share: the fraction of ``weight_decay`` added to the gradient,
            in [0, 1]. ``None`` gives the named optimizer's own share: 1 for
            ``sgd``, ``adam`` and ``signum``, 0 for the decoupled optimizers
            and for the mix names.
        **options: further keyword arguments of the mix, such as ``mask``, or
            ``b2`` and ``eps`` for the Adam family.

    Returns:
        The mix's ``optax.GradientTransformation``. At the name's own share it
        computes the same updates as ``OPTIMIZERS[name]``.

    Raises:
        ValueError: for a name outside ``FAMILIES`` and ``MIX_OPTIMIZERS``, or
            for a hyperparameter given as a Python number out of range.
    """
    if name in FAMILIES:
        mix_name, default_share = FAMILIES[name]
    elif name in MIX_OPTIMIZERS:
        mix_name, default_share = name, 0.0
    else:
        raise ValueError(
            f"unknown optimizer {name!r}; expected one of: {', '.join([*FAMILIES, *MIX_OPTIMIZERS])}"
        )
    if coupled_share is None:
        coupled_share = default_share
    if _is_python_number(coupled_share) and not 0 <= coupled_share <= 1:
        raise ValueError(f"coupled_share={coupled_share} is invalid; expected a value in [0, 1]")
    return OPTIMIZERS[mix_name](
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        coupled_weight_decay=coupled_share * weight_decay,
        **options,
    )


class Hyperparameters(NamedTuple):
    """Learning rate, momentum (``b1`` for Adam) and weight decay of one run."""

    learning_rate: float
    momentum: float
    weight_decay: float


# Per optimizer, the run with the smallest final NC3 (among runs above 99%
# training accuracy) in the 200-epoch grid search over ResNet9 and VGG9 on
# MNIST, FashionMNIST and CIFAR-10. The values are Table 4 of the ICLR 2026
# submission that introduced the NC0 metric.
STUDY_BEST_SETTINGS: dict[str, Hyperparameters] = {
    "sgd": Hyperparameters(learning_rate=0.01, momentum=0.9, weight_decay=0.05),
    "sgdw": Hyperparameters(learning_rate=0.0679, momentum=0.5, weight_decay=0.05),
    "adam": Hyperparameters(learning_rate=0.005, momentum=0.98, weight_decay=0.05),
    "adamw": Hyperparameters(learning_rate=0.005, momentum=0.95, weight_decay=5.0),
    "signum": Hyperparameters(learning_rate=0.001, momentum=0.9, weight_decay=0.05),
    "signumw": Hyperparameters(learning_rate=0.001, momentum=0.98, weight_decay=10.0),
}
