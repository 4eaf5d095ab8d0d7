"""Neural collapse metrics on last-layer features and the linear classifier.

Conventions: ``features`` has shape (N, p) with one row per sample, ``labels``
has shape (N,) with integer classes in [0, K), and the classifier ``W`` has
shape (K, p) with rows ``w_k``. Inside the maths the symbols are

* ``mu_k`` the class means, ``mu_G`` the global mean (by default the
  unweighted mean of the K class means),
* ``M`` the (K, p) matrix of centred class means ``mu_k - mu_G``,
* ``S_W = (1/N) sum_n (h_n - mu_{y_n})(h_n - mu_{y_n})^T`` the within-class
  covariance and ``S_B = M^T M / K`` the between-class covariance,
* ``E = (I_K - J_K / K) / sqrt(K - 1)`` the simplex equiangular tight frame
  (ETF), which has unit Frobenius norm.

The metrics follow the forms behind the published tables of the study that
introduced NC0 to compare coupled and decoupled weight decay. Those tables
drop normalising factors that some of its printed equations carry, and each
docstring below names the factor it leaves out.

Statistics come from ``class_statistics`` (one call on the whole feature
matrix) or from ``StreamingClassStatistics`` (two passes over batches, so the
(N, p) matrix never has to be in memory). Metric functions are pure and
jit-compatible. ``collapse_metrics`` computes all of them in one jitted call.

Float64: arrays returned by ``StreamingClassStatistics(dtype=jnp.float64)``
are float64 even when x64 is disabled, but a jitted function called while
x64 is disabled converts them to float32. To keep float64 in the metrics,
call them inside ``with jax.enable_x64(True):``.
"""

import contextlib
from collections.abc import Callable, Iterable
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# By default JAX may compute float32 matmuls in bfloat16 on TPU and in TF32
# on recent NVIDIA GPUs (JAX documentation, "Matmul precision"). The metrics
# measure distances to values near zero, so every matmul here runs at full
# float32 precision.
_HIGHEST = jax.lax.Precision.HIGHEST

METRIC_NAMES = (
    "nc0",
    "nc0_per_dim",
    "nc0_alpha",
    "nc1",
    "nc1_svd",
    "nc1_quotient",
    "cdnv",
    "nc2",
    "nc2n",
    "nc2a",
    "nc2w",
    "nc2wn",
    "nc2wa",
    "nc2m",
    "nc3",
)
"""Keys of the scalar metrics returned by ``collapse_metrics``, in order."""


def _matmul(a: Array, b: Array) -> Array:
    return jnp.matmul(a, b, precision=_HIGHEST)


class ClassStatistics(NamedTuple):
    """First and second moments of the features, per class.

    Attributes:
      counts: (K,) number (or total weight) of samples in each class.
      class_means: (K, p) class means ``mu_k``.
      global_mean: (p,) global mean ``mu_G``. By default it is the unweighted
        mean of the class means, otherwise the sample-weighted mean.
      within_covariance: (p, p) ``S_W = (1/N) sum_n (h_n - mu_{y_n})(h_n -
        mu_{y_n})^T``. The printed formula of the study centres on ``mu_G``,
        which is a typo: the published numbers centre on the class means.
      class_variances: (K,) mean over class k of ``||h_n - mu_k||^2``.
    """

    counts: Array
    class_means: Array
    global_mean: Array
    within_covariance: Array
    class_variances: Array


# ---------------------------------------------------------------------------
# Input checks, run on the host.


def check_labels(labels, num_classes: int, weights=None) -> None:
    """Raise ValueError unless every label is an integer in [0, num_classes).

    Labels of samples with weight 0 are not checked, because padded rows of a
    batch may carry any label.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}.")
    if weights is not None:
        labels = labels[np.asarray(weights) != 0]
    invalid = (labels < 0) | (labels >= num_classes)
    if np.any(invalid):
        bad_values = np.unique(labels[invalid])
        raise ValueError(
            f"Invalid label(s) {bad_values[:10].tolist()}: labels must be in "
            f"[0, {num_classes}) for num_classes={num_classes}."
        )


def check_class_counts(counts) -> None:
    """Raise ValueError if any class has no samples (count or weight 0)."""
    counts = np.asarray(counts)
    empty = np.flatnonzero(counts <= 0)
    if empty.size:
        raise ValueError(
            f"Class(es) {empty.tolist()} have no samples: every class needs "
            "at least one sample to define its mean."
        )


def _check_weights(weights, num_samples: int) -> None:
    weights = np.asarray(weights)
    if weights.shape != (num_samples,):
        raise ValueError(
            f"weights must have shape ({num_samples},) to match the features, "
            f"got {weights.shape}."
        )
    if np.any(weights < 0):
        raise ValueError(
            f"weights must be nonnegative, got minimum {weights.min()}."
        )


# ---------------------------------------------------------------------------
# Per-batch sums shared by the one-shot and the streaming statistics.


def _masked_inputs(features, labels, weights, dtype):
    """Cast to ``dtype`` and zero the features of samples with weight 0.

    Zeroing (rather than multiplying by the weight) keeps NaN or infinite
    padding out of the sums.
    """
    features = jnp.asarray(features, dtype)
    if weights is None:
        weights = jnp.ones(features.shape[0], dtype)
    weights = jnp.asarray(weights, dtype)
    features = jnp.where((weights > 0)[:, None], features, 0)
    return features, jnp.asarray(labels), weights


def _class_sums(features, labels, weights, num_classes):
    """Return the per-class weighted sums (K, p) and weights (K,)."""
    # one_hot gives an all-zero row for a label outside [0, K).
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=features.dtype)
    weighted_one_hot = one_hot * weights[:, None]
    return _matmul(weighted_one_hot.T, features), weighted_one_hot.sum(axis=0)


def _centred_sums(features, labels, weights, class_means):
    """Return the weighted scatter (p, p) and per-class squared distances (K,)."""
    num_classes = class_means.shape[0]
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=features.dtype)
    centred = features - _matmul(one_hot, class_means)
    centred = jnp.where((weights > 0)[:, None], centred, 0)
    weighted_centred = centred * weights[:, None]
    scatter = _matmul(weighted_centred.T, centred)
    squared_distances = _matmul(
        (one_hot * weights[:, None]).T, jnp.sum(centred * centred, axis=1)
    )
    return scatter, squared_distances


def _means(class_sums, counts, weighted_global_mean):
    class_means = class_sums / counts[:, None]
    if weighted_global_mean:
        global_mean = class_sums.sum(axis=0) / counts.sum()
    else:
        global_mean = class_means.mean(axis=0)
    return class_means, global_mean


@functools.partial(
    jax.jit, static_argnames=("num_classes", "weighted_global_mean")
)
def class_statistics(
    features: Array,
    labels: Array,
    num_classes: int,
    *,
    weighted_global_mean: bool = False,
    weights: Array | None = None,
) -> ClassStatistics:
    """Compute the class statistics of a whole feature matrix in one call.

    Args:
      features: (N, p) features, one row per sample.
      labels: (N,) integer labels in [0, num_classes). Being jitted, this
        function cannot raise on invalid labels, and a label outside the
        range silently gives wrong statistics. Call ``check_labels`` on the
        host first when labels are not trusted.
      num_classes: K, static.
      weighted_global_mean: if True, ``mu_G`` is the sample-weighted mean of
        the features, otherwise the unweighted mean of the class means.
      weights: optional (N,) nonnegative sample weights, for example 0 for
        padded rows. Samples with weight 0 are ignored, whatever their label.

    Returns:
      ClassStatistics in the dtype of ``features``. A class without samples
      gets NaN means: check ``counts`` with ``check_class_counts``.
    """
    dtype = jnp.result_type(features, float)
    features, labels, weights = _masked_inputs(features, labels, weights, dtype)
    class_sums, counts = _class_sums(features, labels, weights, num_classes)
    class_means, global_mean = _means(class_sums, counts, weighted_global_mean)
    scatter, squared_distances = _centred_sums(
        features, labels, weights, class_means
    )
    return ClassStatistics(
        counts=counts,
        class_means=class_means,
        global_mean=global_mean,
        within_covariance=scatter / weights.sum(),
        class_variances=squared_distances / counts,
    )


# ---------------------------------------------------------------------------
# Streaming statistics, two passes over batches.


@functools.partial(jax.jit, static_argnames=("dtype",))
def _accumulate_means(class_sums, counts, features, labels, weights, dtype):
    features, labels, weights = _masked_inputs(features, labels, weights, dtype)
    batch_sums, batch_counts = _class_sums(
        features, labels, weights, counts.shape[0]
    )
    return class_sums + batch_sums, counts + batch_counts


@functools.partial(jax.jit, static_argnames=("dtype",))
def _accumulate_covariance(
    scatter, squared_distances, counts, class_means, features, labels, weights,
    dtype,
):
    features, labels, weights = _masked_inputs(features, labels, weights, dtype)
    batch_scatter, batch_squared_distances = _centred_sums(
        features, labels, weights, class_means
    )
    # Counting again lets result() check that both passes saw the same data.
    _, batch_counts = _class_sums(features, labels, weights, counts.shape[0])
    return (
        scatter + batch_scatter,
        squared_distances + batch_squared_distances,
        counts + batch_counts,
    )


class StreamingClassStatistics:
    """Accumulate ``ClassStatistics`` over batches in two passes.

    Pass 1 (``update_means``) sums the features and counts per class. Pass 2
    (``update_covariance``) must see the same samples again, and sums the
    outer products of the features centred on the finished class means. The
    two passes avoid the cancellation of the one-pass ``E[hh^T] - mu mu^T``
    form, which matters in float32 when features are far from the origin.

    With ``dtype=jnp.float64`` the sums run inside ``jax.enable_x64(True)``,
    so they are float64 whether or not x64 is enabled globally.

    Each distinct batch shape compiles the update once, so keep batch sizes
    fixed (pad the last batch and give the padding weight 0) on large runs.

    Example::

      stats = StreamingClassStatistics(num_classes=10, dim=512)
      for features, labels in batches():
        stats.update_means(features, labels)
      for features, labels in batches():
        stats.update_covariance(features, labels)
      result = stats.result()
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        dtype=jnp.float32,
        weighted_global_mean: bool = False,
    ):
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}.")
        if num_classes < 1 or dim < 1:
            raise ValueError(
                "num_classes and dim must be positive, got "
                f"num_classes={num_classes}, dim={dim}."
            )
        self.num_classes = num_classes
        self.dim = dim
        self.dtype = dtype
        self.weighted_global_mean = weighted_global_mean

        with self._dtype_context():
            self._class_sums = jnp.zeros((num_classes, dim), dtype)
            self._counts = jnp.zeros(num_classes, dtype)
            self._scatter = jnp.zeros((dim, dim), dtype)
            self._squared_distances = jnp.zeros(num_classes, dtype)
            self._covariance_counts = jnp.zeros(num_classes, dtype)
        self._class_means = None
        self._global_mean = None
        self._num_mean_batches = 0
        self._num_covariance_batches = 0

    def _dtype_context(self):
        if self.dtype == np.float64:
            return jax.enable_x64(True)
        return contextlib.nullcontext()

    def _check_batch(self, features, labels, weights) -> None:
        feature_shape = np.shape(features)
        if len(feature_shape) != 2 or feature_shape[1] != self.dim:
            raise ValueError(
                f"features must have shape (batch, {self.dim}), got "
                f"{feature_shape}."
            )
        if np.shape(labels) != feature_shape[:1]:
            raise ValueError(
                f"labels must have shape ({feature_shape[0]},) to match the "
                f"features, got {np.shape(labels)}."
            )
        if weights is not None:
            _check_weights(weights, feature_shape[0])
        check_labels(labels, self.num_classes, weights)

    def update_means(self, features, labels, weights=None) -> None:
        """Add a batch to pass 1: per-class sums of features and counts."""
        if self._num_covariance_batches:
            raise RuntimeError(
                "update_means was called after update_covariance: pass 1 "
                "(means) must see every batch before pass 2 starts. Create a "
                "new StreamingClassStatistics to start over."
            )
        self._check_batch(features, labels, weights)
        with self._dtype_context():
            self._class_sums, self._counts = _accumulate_means(
                self._class_sums, self._counts, features, labels, weights,
                dtype=self.dtype,
            )
        self._num_mean_batches += 1

    def _finish_means(self) -> None:
        check_class_counts(self._counts)
        with self._dtype_context():
            self._class_means, self._global_mean = _means(
                self._class_sums, self._counts, self.weighted_global_mean
            )

    def update_covariance(self, features, labels, weights=None) -> None:
        """Add a batch to pass 2: scatter around the finished class means.

        The first call ends pass 1, and raises ValueError if a class has no
        samples.
        """
        if not self._num_mean_batches:
            raise RuntimeError(
                "update_covariance was called before any update_means: run "
                "pass 1 over every batch first."
            )
        self._check_batch(features, labels, weights)
        if self._class_means is None:
            self._finish_means()
        with self._dtype_context():
            (
                self._scatter,
                self._squared_distances,
                self._covariance_counts,
            ) = _accumulate_covariance(
                self._scatter,
                self._squared_distances,
                self._covariance_counts,
                self._class_means,
                features,
                labels,
                weights,
                dtype=self.dtype,
            )
        self._num_covariance_batches += 1

    def result(self) -> ClassStatistics:
        """Return the finished statistics in the accumulator's dtype.

        Raises RuntimeError before pass 2 has started, and ValueError if the
        two passes saw different per-class counts.
        """
        if not self._num_covariance_batches:
            raise RuntimeError(
                "result() needs both passes: call update_means on every "
                "batch, then update_covariance on every batch."
            )
        counts = np.asarray(self._counts)
        covariance_counts = np.asarray(self._covariance_counts)
        # Sums of the same weights in another order may differ by rounding.
        if not np.allclose(covariance_counts, counts, rtol=1e-5, atol=0):
            raise ValueError(
                "The two passes saw different per-class counts (pass 1: "
                f"{counts.tolist()}, pass 2: {covariance_counts.tolist()}): "
                "both passes must iterate over the same samples."
            )
        with self._dtype_context():
            return ClassStatistics(
                counts=self._counts,
                class_means=self._class_means,
                global_mean=self._global_mean,
                within_covariance=self._scatter / self._counts.sum(),
                class_variances=self._squared_distances / self._counts,
            )


def accumulate_class_statistics(
    batches: Callable[[], Iterable[tuple]],
    num_classes: int,
    *,
    dtype=jnp.float32,
    weighted_global_mean: bool = False,
) -> ClassStatistics:
    """Accumulate ``ClassStatistics`` over two passes of ``batches()``.

    Args:
      batches: zero-argument callable returning a fresh iterable of
        ``(features, labels)`` or ``(features, labels, weights)``. It is
        called twice and must yield the same samples both times.
      num_classes: K.
      dtype: float32 or float64, the dtype of the sums and of the result.
      weighted_global_mean: see ``class_statistics``.
    """
    accumulator = None
    for batch in batches():
        if len(batch) not in (2, 3):
            raise ValueError(
                "Each batch must be (features, labels) or (features, labels, "
                f"weights), got a tuple of length {len(batch)}."
            )
        if accumulator is None:
            accumulator = StreamingClassStatistics(
                num_classes,
                np.shape(batch[0])[1],
                dtype=dtype,
                weighted_global_mean=weighted_global_mean,
            )
        accumulator.update_means(*batch)
    if accumulator is None:
        raise ValueError("batches() yielded no batches.")
    for batch in batches():
        accumulator.update_covariance(*batch)
    return accumulator.result()


# ---------------------------------------------------------------------------
# Geometry shared by the metrics.


def centred_class_means(stats: ClassStatistics) -> Array:
    """Return ``M``, the (K, p) matrix with rows ``mu_k - mu_G``."""
    return stats.class_means - stats.global_mean


def between_class_covariance(M: Array) -> Array:
    """Return ``S_B = M^T M / K``, shape (p, p)."""
    return _matmul(M.T, M) / M.shape[0]


def simplex_etf(num_classes: int, dtype=None) -> Array:
    """Return ``E = (I_K - J_K / K) / sqrt(K - 1)``, the (K, K) simplex ETF.

    Diagonal entries are ``(K - 1) / (K sqrt(K - 1))`` and off-diagonal
    entries ``-1 / (K sqrt(K - 1))``, so ``E`` has unit Frobenius norm and its
    rows sum to zero.
    """
    K = num_classes
    centring = jnp.eye(K, dtype=dtype) - jnp.ones((K, K), dtype=dtype) / K
    return centring / jnp.sqrt(jnp.asarray(K - 1, centring.dtype))


# Under jax.vmap, jaxlib 0.10.2 on CPU decomposes a batch of matrices with a
# parallel loop on XLA's intra-op thread pool. Two such batched SVDs running
# at once can each wait for pool threads held by the other, and the program
# hangs (seen with vmapped UFM grids on 2 cores). Decomposing the batch one
# matrix at a time inside the program avoids it.
@jax.custom_batching.sequential_vmap
def _svd(A: Array) -> tuple[Array, Array, Array]:
    return jnp.linalg.svd(A, full_matrices=False)


@jax.custom_batching.sequential_vmap
def _svd_values(A: Array) -> Array:
    return jnp.linalg.svd(A, compute_uv=False)


def singular_values(A: Array) -> Array:
    """Return the singular values of ``A`` in descending order."""
    return _svd_values(A)


def _off_diagonal_mean(matrix: Array) -> Array:
    K = matrix.shape[0]
    off_diagonal = ~jnp.eye(K, dtype=bool)
    return jnp.sum(jnp.where(off_diagonal, matrix, 0)) / (K * (K - 1))


def _distance_to_etf(A: Array, B: Array) -> Array:
    """Return ``|| A B^T / ||A B^T||_F - E ||_F``."""
    gram = _matmul(A, B.T)
    gram = gram / jnp.linalg.norm(gram)
    return jnp.linalg.norm(gram - simplex_etf(A.shape[0], gram.dtype))


def _row_norm_variation(A: Array) -> Array:
    """Return the sample std (ddof 1) of the row norms over their mean."""
    norms = jnp.linalg.norm(A, axis=1)
    return jnp.std(norms, ddof=1) / jnp.mean(norms)


def _row_angle_deviation(A: Array) -> Array:
    """Return the mean over k != k' of ``|cos(A_k, A_k') + 1/(K-1)|``."""
    K = A.shape[0]
    unit_rows = A / jnp.linalg.norm(A, axis=1, keepdims=True)
    cosines = _matmul(unit_rows, unit_rows.T)
    return _off_diagonal_mean(jnp.abs(cosines + 1 / (K - 1)))


# ---------------------------------------------------------------------------
# NC0: the sum of the classifier rows.


def nc0(W: Array) -> Array:
    """NC0 = ``||W^T 1||_2``, the norm of the sum of the rows of W.

    Collapsed value 0. Not divided by p, as in the published tables (the
    printed equation divides by p: see ``nc0_per_dim``).
    """
    return jnp.linalg.norm(W.sum(axis=0))


def nc0_per_dim(W: Array) -> Array:
    """NC0 / p = ``||W^T 1||_2 / p``, the printed equation's form.

    Collapsed value 0.
    """
    return nc0(W) / W.shape[1]


def nc0_alpha(W: Array) -> Array:
    """``alpha = ||W^T 1||_2^2 / K``, the squared NC0 used in the analysis.

    The convergence results for SGD and sign descent with weight decay are
    stated for alpha. Collapsed value 0.
    """
    return jnp.sum(W.sum(axis=0) ** 2) / W.shape[0]


# ---------------------------------------------------------------------------
# NC1: within-class variability against between-class separation.


def nc1(S_W: Array, S_B: Array, num_classes: int) -> Array:
    """NC1 = ``tr(S_W S_B^+) / K``, with the Moore-Penrose pseudo-inverse.

    Collapsed value 0. The pseudo-inverse treats singular values of S_B below
    ``10 * p * eps * s_max`` as zero, with ``eps`` the machine epsilon of the
    dtype and ``s_max`` the largest singular value. S_B has rank at most K - 1
    (K with a sample-weighted ``mu_G``), and its null directions come out of
    the matmul as rounding noise near ``eps * s_max``.
    """
    p = S_B.shape[0]
    cutoff = 10 * p * jnp.finfo(S_B.dtype).eps
    U, s, Vt = _svd(S_B)
    inverse = jnp.where(s > cutoff * s[0], 1 / jnp.where(s > 0, s, 1), 0)
    S_B_pinv = _matmul(Vt.T * inverse, U.T)
    return jnp.sum(S_W * S_B_pinv.T) / num_classes


def nc1_svd(S_W: Array, S_B: Array, num_classes: int) -> Array:
    """NC1 with a rank-r inverse: ``tr(S_W V_r diag(1/s_r) V_r^T) / K``.

    ``s_r, V_r`` are the top ``r = min(K - 1, p)`` singular values and vectors
    of S_B. Collapsed value 0. Unlike ``nc1`` it keeps exactly r directions,
    so it is infinite (or NaN) when S_B has rank below r.
    """
    p = S_B.shape[0]
    rank = min(num_classes - 1, p)
    _, s, Vt = _svd(S_B)
    V_r = Vt[:rank].T
    # diag(V_r^T S_W V_r), without forming the product.
    projected_variances = jnp.einsum(
        "ji,jk,ki->i", V_r, S_W, V_r, precision=_HIGHEST
    )
    return jnp.sum(projected_variances / s[:rank]) / num_classes


def nc1_quotient(S_W: Array, S_B: Array) -> Array:
    """NC1 as the trace quotient ``tr S_W / tr S_B``. Collapsed value 0."""
    return jnp.trace(S_W) / jnp.trace(S_B)


def cdnv(class_means: Array, class_variances: Array) -> Array:
    """Class-distance normalised variance, averaged over pairs of classes.

    CDNV = mean over k != k' of ``(var_k + var_k') / (2 ||mu_k - mu_k'||^2)``,
    with ``var_k`` the mean of ``||h_n - mu_k||^2`` over class k. Collapsed
    value 0. Two equal class means give an infinite value.
    """
    # Distances do not depend on the origin, and centring first limits the
    # cancellation in ||a||^2 + ||b||^2 - 2 <a, b>.
    centred = class_means - class_means.mean(axis=0)
    squared_norms = jnp.sum(centred * centred, axis=1)
    squared_distances = (
        squared_norms[:, None]
        + squared_norms[None, :]
        - 2 * _matmul(centred, centred.T)
    )
    variance_sums = class_variances[:, None] + class_variances[None, :]
    off_diagonal = ~jnp.eye(class_means.shape[0], dtype=bool)
    safe_distances = jnp.where(off_diagonal, squared_distances, 1)
    return _off_diagonal_mean(variance_sums / (2 * safe_distances))


# ---------------------------------------------------------------------------
# NC2: convergence of the class means and classifier rows to a simplex ETF.


def nc2(M: Array) -> Array:
    """NC2 = ``|| M M^T / ||M M^T||_F - E ||_F``. Collapsed value 0.

    Not divided by K^2, as in the published tables (the printed equation
    divides by K^2).
    """
    return _distance_to_etf(M, M)


def nc2_norms(M: Array) -> Array:
    """NC2n = std_k ``||M_k||`` / mean_k ``||M_k||`` (sample std, ddof 1).

    Collapsed value 0 (equal norms).
    """
    return _row_norm_variation(M)


def nc2_angles(M: Array) -> Array:
    """NC2a = mean over ordered pairs k != k' of ``|cos(M_k, M_k') + 1/(K-1)|``.

    Collapsed value 0 (every pair at the ETF angle).
    """
    return _row_angle_deviation(M)


def nc2_w(W: Array) -> Array:
    """NC2W = ``|| W W^T / ||W W^T||_F - E ||_F``, W not centred.

    Collapsed value 0.
    """
    return _distance_to_etf(W, W)


def nc2_w_norms(W: Array) -> Array:
    """NC2Wn = std_k ``||w_k||`` / mean_k ``||w_k||`` (sample std, ddof 1).

    Collapsed value 0 (equal norms).
    """
    return _row_norm_variation(W)


def nc2_w_angles(W: Array) -> Array:
    """NC2Wa = mean over ordered pairs k != k' of ``|cos(w_k, w_k') + 1/(K-1)|``.

    Collapsed value 0 (every pair at the ETF angle).
    """
    return _row_angle_deviation(W)


def nc2_m(W: Array, M: Array) -> Array:
    """NC2M = ``|| W M^T / ||W M^T||_F - E ||_F``. Collapsed value 0."""
    return _distance_to_etf(W, M)


# ---------------------------------------------------------------------------
# NC3 and NC4: the classifier against the class means.


def nc3(W: Array, M: Array) -> Array:
    """NC3 = ``|| W / ||W||_F - M / ||M||_F ||_F``, in [0, 2].

    Collapsed value 0. Not divided by K p, as in the published tables (the
    printed equation divides by K p).
    """
    return jnp.linalg.norm(W / jnp.linalg.norm(W) - M / jnp.linalg.norm(M))


@jax.jit
def nc4_matches(
    features: Array,
    W: Array,
    class_means: Array,
    weights: Array | None = None,
    bias: Array | None = None,
) -> Array:
    """Count the samples where the classifier agrees with the nearest class mean.

    Returns the (weighted) number of samples with ``argmax_k (<w_k, h> + b_k)
    == argmin_k ||h - mu_k||``. NC4 over a dataset is the total over batches
    divided by the total weight, collapsed value 1. ``class_means`` are the
    uncentred ``mu_k`` of the training set.

    By default the bias is ignored, as in the study's own code. Then NC4 can
    stay below 1 at exact collapse when ``mu_G`` is not 0, because
    ``<w_k, mu_G>`` differs between classes and only a bias cancels it.
    """
    logits = _matmul(features, W.T)
    if bias is not None:
        logits = logits + bias
    # ||h - mu_k||^2 = ||h||^2 - 2 <h, mu_k> + ||mu_k||^2, and ||h||^2 does
    # not change the argmin.
    squared_mean_norms = jnp.sum(class_means * class_means, axis=1)
    distance_scores = squared_mean_norms - 2 * _matmul(features, class_means.T)
    matches = jnp.argmax(logits, axis=1) == jnp.argmin(distance_scores, axis=1)
    if weights is None:
        return jnp.sum(matches, dtype=logits.dtype)
    return jnp.sum(jnp.where(matches, weights, 0))


@jax.jit
def nc4(
    features: Array,
    W: Array,
    class_means: Array,
    weights: Array | None = None,
    bias: Array | None = None,
) -> Array:
    """NC4, the share of samples counted by ``nc4_matches``. Collapsed value 1."""
    if weights is None:
        total = features.shape[0]
    else:
        total = jnp.sum(weights)
    return nc4_matches(features, W, class_means, weights, bias) / total


# ---------------------------------------------------------------------------
# Everything at once.


@jax.jit
def collapse_metrics(stats: ClassStatistics, W: Array) -> dict[str, Array]:
    """Compute every NC metric of ``METRIC_NAMES`` plus singular values.

    Args:
      stats: class statistics of the training features.
      W: (K, p) classifier weights.

    Returns:
      A dict with a scalar for each key of ``METRIC_NAMES``, and the
      descending singular values of W and M under "singular_values_W" and
      "singular_values_M". Loss, accuracy and NC4 need the samples and are
      not included.
    """
    K = W.shape[0]
    M = centred_class_means(stats)
    S_W = stats.within_covariance
    S_B = between_class_covariance(M)
    return {
        "nc0": nc0(W),
        "nc0_per_dim": nc0_per_dim(W),
        "nc0_alpha": nc0_alpha(W),
        "nc1": nc1(S_W, S_B, K),
        "nc1_svd": nc1_svd(S_W, S_B, K),
        "nc1_quotient": nc1_quotient(S_W, S_B),
        "cdnv": cdnv(stats.class_means, stats.class_variances),
        "nc2": nc2(M),
        "nc2n": nc2_norms(M),
        "nc2a": nc2_angles(M),
        "nc2w": nc2_w(W),
        "nc2wn": nc2_w_norms(W),
        "nc2wa": nc2_w_angles(W),
        "nc2m": nc2_m(W, M),
        "nc3": nc3(W, M),
        "singular_values_W": singular_values(W),
        "singular_values_M": singular_values(M),
    }
