"""Tests of ncjax.metrics against a plain numpy float64 reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncjax import metrics


@pytest.fixture
def x64():
    """Enable float64 for one test and restore the previous setting after it."""
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------------------
# Reference implementation: loops and plain numpy in float64, written from
# the metric definitions without calling ncjax.


def reference_statistics(
    features, labels, num_classes, weights=None, weighted_global_mean=False
):
    features = np.asarray(features, np.float64)
    num_samples, dim = features.shape
    if weights is None:
        weights = np.ones(num_samples)

    counts = np.zeros(num_classes)
    sums = np.zeros((num_classes, dim))
    for h, y, w in zip(features, labels, weights):
        counts[y] += w
        sums[y] += w * h
    class_means = sums / counts[:, None]
    if weighted_global_mean:
        global_mean = sum(w * h for h, w in zip(features, weights)) / np.sum(weights)
    else:
        global_mean = class_means.mean(axis=0)

    within_covariance = np.zeros((dim, dim))
    class_variances = np.zeros(num_classes)
    for h, y, w in zip(features, labels, weights):
        deviation = h - class_means[y]
        within_covariance += w * np.outer(deviation, deviation)
        class_variances[y] += w * deviation @ deviation
    return {
        "counts": counts,
        "class_means": class_means,
        "global_mean": global_mean,
        "within_covariance": within_covariance / np.sum(weights),
        "class_variances": class_variances / counts,
    }


def reference_etf(num_classes):
    etf = np.zeros((num_classes, num_classes))
    for i in range(num_classes):
        for j in range(num_classes):
            etf[i, j] = (float(i == j) - 1 / num_classes) / np.sqrt(num_classes - 1)
    return etf


def reference_etf_distance(A, B):
    gram = A @ B.T
    return np.linalg.norm(gram / np.linalg.norm(gram) - reference_etf(len(A)))


def reference_norm_variation(A):
    norms = np.array([np.sqrt(row @ row) for row in A])
    return np.std(norms, ddof=1) / np.mean(norms)


def reference_angle_deviation(A):
    K = len(A)
    total = 0.0
    for i in range(K):
        for j in range(K):
            if i != j:
                cosine = A[i] @ A[j] / np.sqrt((A[i] @ A[i]) * (A[j] @ A[j]))
                total += abs(cosine + 1 / (K - 1))
    return total / (K * (K - 1))


def reference_inverse_trace(S_W, S_B, keep):
    """tr(S_W V diag(1/s) V^T) over the eigenpairs of S_B selected by keep."""
    eigenvalues, eigenvectors = np.linalg.eigh(S_B)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    total = 0.0
    for i in range(len(eigenvalues)):
        if keep(i, eigenvalues):
            v = eigenvectors[:, i]
            total += v @ S_W @ v / eigenvalues[i]
    return total


def reference_metrics(stats, W):
    W = np.asarray(W, np.float64)
    K, p = W.shape
    M = stats["class_means"] - stats["global_mean"]
    S_W = stats["within_covariance"]
    S_B = sum(np.outer(row, row) for row in M) / K
    column_sums = W.sum(axis=0)

    cdnv_total = 0.0
    for i in range(K):
        for j in range(K):
            if i != j:
                difference = stats["class_means"][i] - stats["class_means"][j]
                variance_sum = stats["class_variances"][i] + stats["class_variances"][j]
                cdnv_total += variance_sum / (2 * difference @ difference)

    rank = min(K - 1, p)
    return {
        "nc0": np.sqrt(column_sums @ column_sums),
        "nc0_per_dim": np.sqrt(column_sums @ column_sums) / p,
        "nc0_alpha": column_sums @ column_sums / K,
        "nc1": reference_inverse_trace(
            S_W, S_B, lambda i, s: s[i] > 1e-10 * s[0]
        ) / K,
        "nc1_svd": reference_inverse_trace(S_W, S_B, lambda i, s: i < rank) / K,
        "nc1_quotient": np.trace(S_W) / np.trace(S_B),
        "cdnv": cdnv_total / (K * (K - 1)),
        "nc2": reference_etf_distance(M, M),
        "nc2n": reference_norm_variation(M),
        "nc2a": reference_angle_deviation(M),
        "nc2w": reference_etf_distance(W, W),
        "nc2wn": reference_norm_variation(W),
        "nc2wa": reference_angle_deviation(W),
        "nc2m": reference_etf_distance(W, M),
        "nc3": np.linalg.norm(W / np.linalg.norm(W) - M / np.linalg.norm(M)),
        "singular_values_W": np.linalg.svd(W, compute_uv=False),
        "singular_values_M": np.linalg.svd(M, compute_uv=False),
    }


def reference_nc4(features, W, class_means):
    matches = 0
    for h in features:
        classifier_choice = np.argmax([w @ h for w in W])
        nearest_mean = np.argmin([np.linalg.norm(h - mu) for mu in class_means])
        matches += classifier_choice == nearest_mean
    return matches / len(features)


# ---------------------------------------------------------------------------
# Random data.


def make_features(rng, counts, dim, noise=1.0):
    """Return features around random class centres, labels in class order."""
    centres = 3.0 * rng.normal(size=(len(counts), dim)) + 5.0
    labels = np.repeat(np.arange(len(counts)), counts)
    features = centres[labels] + noise * rng.normal(size=(len(labels), dim))
    return features, labels


REFERENCE_CASES = [
    # (K, p, samples per class), all imbalanced.
    (2, 5, [7, 3]),
    (3, 2, [4, 9, 5]),
    (10, 5, [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
    (10, 32, [3, 3, 3, 3, 3, 12, 12, 12, 12, 12]),
]


@pytest.mark.parametrize("num_classes, dim, counts", REFERENCE_CASES)
def test_metrics_match_reference(x64, num_classes, dim, counts):
    rng = np.random.default_rng(num_classes * 100 + dim)
    features, labels = make_features(rng, counts, dim)
    expected_stats = reference_statistics(features, labels, num_classes)
    # A classifier near the class means, so that NC4 is neither 0 nor 1.
    W = (
        expected_stats["class_means"]
        - expected_stats["global_mean"]
        + 2.0 * rng.normal(size=(num_classes, dim))
    )

    stats = metrics.class_statistics(jnp.asarray(features), labels, num_classes)
    for field in metrics.ClassStatistics._fields:
        np.testing.assert_allclose(
            getattr(stats, field), expected_stats[field], rtol=1e-10, err_msg=field
        )

    results = metrics.collapse_metrics(stats, jnp.asarray(W))
    expected = reference_metrics(expected_stats, W)
    assert set(results) == set(expected)
    for name, value in expected.items():
        assert results[name].dtype == jnp.float64, name
        # atol covers values that are zero by construction, such as NC2 at
        # K = 2 or the last singular value of M, where both sides are rounding.
        np.testing.assert_allclose(
            results[name], value, rtol=1e-6, atol=1e-12, err_msg=name
        )

    test_features, _ = make_features(rng, counts, dim, noise=3.0)
    expected_nc4 = reference_nc4(test_features, W, expected_stats["class_means"])
    assert 0 < expected_nc4 < 1
    nc4 = metrics.nc4(jnp.asarray(test_features), jnp.asarray(W), stats.class_means)
    np.testing.assert_allclose(nc4, expected_nc4, rtol=1e-6)


def test_nc1_float32_drops_null_directions():
    # With p = 32 > K, S_B has 23 null directions that float32 rounding turns
    # into tiny nonzero singular values. Inverting them would blow NC1 up.
    rng = np.random.default_rng(4)
    num_classes, dim, counts = REFERENCE_CASES[-1]
    features, labels = make_features(rng, counts, dim)
    stats = metrics.class_statistics(
        jnp.asarray(features, jnp.float32), labels, num_classes
    )
    M = metrics.centred_class_means(stats)
    S_B = metrics.between_class_covariance(M)
    assert S_B.dtype == jnp.float32

    expected = reference_metrics(
        reference_statistics(features, labels, num_classes),
        rng.normal(size=(num_classes, dim)),
    )
    nc1 = metrics.nc1(stats.within_covariance, S_B, num_classes)
    nc1_svd = metrics.nc1_svd(stats.within_covariance, S_B, num_classes)
    np.testing.assert_allclose(nc1, expected["nc1"], rtol=1e-3)
    np.testing.assert_allclose(nc1_svd, expected["nc1_svd"], rtol=1e-3)


def test_metric_names_are_scalar_keys(x64):
    rng = np.random.default_rng(0)
    features, labels = make_features(rng, [7, 3], 5)
    stats = metrics.class_statistics(jnp.asarray(features), labels, 2)
    results = metrics.collapse_metrics(stats, jnp.asarray(rng.normal(size=(2, 5))))
    scalar_keys = {name for name in results if results[name].ndim == 0}
    assert set(metrics.METRIC_NAMES) == scalar_keys
    assert len(metrics.METRIC_NAMES) == len(scalar_keys)


def test_weighted_global_mean_matches_reference(x64):
    rng = np.random.default_rng(1)
    num_classes, dim, counts = 10, 32, [3, 3, 3, 3, 3, 12, 12, 12, 12, 12]
    features, labels = make_features(rng, counts, dim)
    weights = rng.uniform(0.5, 2.0, size=len(labels))
    W = rng.normal(size=(num_classes, dim))

    stats = metrics.class_statistics(
        jnp.asarray(features),
        labels,
        num_classes,
        weighted_global_mean=True,
        weights=jnp.asarray(weights),
    )
    expected_stats = reference_statistics(
        features, labels, num_classes, weights, weighted_global_mean=True
    )
    sample_weighted_mean = weights @ features / weights.sum()
    np.testing.assert_allclose(stats.global_mean, sample_weighted_mean, rtol=1e-10)
    for field in metrics.ClassStatistics._fields:
        np.testing.assert_allclose(
            getattr(stats, field), expected_stats[field], rtol=1e-10, err_msg=field
        )

    results = metrics.collapse_metrics(stats, jnp.asarray(W))
    expected = reference_metrics(expected_stats, W)
    for name in ("nc1", "nc1_quotient", "nc2", "nc2n", "nc2a", "nc2m", "nc3"):
        np.testing.assert_allclose(
            results[name], expected[name], rtol=1e-6, err_msg=name
        )


# ---------------------------------------------------------------------------
# Exact collapse.


@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_perfect_collapse_gives_zero(x64, offset):
    num_classes, dim, scale = 5, 8, 4.0
    rng = np.random.default_rng(2)
    # Orthonormal columns embed the K-dimensional ETF into R^p.
    embedding, _ = np.linalg.qr(rng.normal(size=(dim, num_classes)))
    etf = (np.eye(num_classes) - 1 / num_classes) / np.sqrt(num_classes - 1)
    global_mean = offset * rng.normal(size=dim)
    class_means = global_mean + scale * etf @ embedding.T
    counts = [1, 2, 3, 4, 5]
    labels = np.repeat(np.arange(num_classes), counts)
    features = jnp.asarray(class_means[labels])

    stats = metrics.class_statistics(features, labels, num_classes)
    M = metrics.centred_class_means(stats)
    W = 3.0 * M
    results = metrics.collapse_metrics(stats, W)
    for name in metrics.METRIC_NAMES:
        np.testing.assert_allclose(results[name], 0.0, atol=1e-10, err_msg=name)

    singular_values = np.asarray(results["singular_values_M"])
    np.testing.assert_allclose(singular_values[:-1], singular_values[0], rtol=1e-12)
    np.testing.assert_allclose(singular_values[-1], 0.0, atol=1e-12)

    # Without a bias, <w_k, mu_G> shifts the logits, so the classifier
    # agrees with the nearest mean only once the bias absorbs that shift.
    bias = None if offset == 0.0 else -W @ stats.global_mean
    assert metrics.nc4_matches(features, W, stats.class_means, bias=bias) == len(labels)
    assert metrics.nc4(features, W, stats.class_means, bias=bias) == 1.0


def test_simplex_etf_properties(x64):
    etf = np.asarray(metrics.simplex_etf(4))
    np.testing.assert_allclose(np.linalg.norm(etf), 1.0, rtol=1e-14)
    np.testing.assert_allclose(etf.sum(axis=0), 0.0, atol=1e-15)
    cosines = etf[0, 1:] / etf[0, 0]
    np.testing.assert_allclose(cosines, -1 / 3, rtol=1e-14)


# ---------------------------------------------------------------------------
# Streaming statistics.

STREAM_CLASSES, STREAM_DIM = 4, 6
PADDED_BATCH_SIZE = 16


def make_stream_data(seed=3):
    rng = np.random.default_rng(seed)
    features, labels = make_features(
        rng, [5, 9, 13, 14], STREAM_DIM, noise=0.5
    )
    order = rng.permutation(len(labels))
    return features[order], labels[order]


def uneven_batches(features, labels):
    """Return batches of sizes 10, 3, 16, then the rest padded to 16 rows.

    The padding has weight 0, label -1 and huge features, so any leak of it
    into the sums shows.
    """
    batches = [
        (features[:10], labels[:10]),
        (features[10:13], labels[10:13]),
        (features[13:29], labels[13:29], np.ones(16)),
    ]
    rest_features, rest_labels = features[29:], labels[29:]
    padding = PADDED_BATCH_SIZE - len(rest_labels)
    batches.append((
        np.concatenate([rest_features, np.full((padding, STREAM_DIM), 1e6)]),
        np.concatenate([rest_labels, np.full(padding, -1)]),
        np.concatenate([np.ones(len(rest_labels)), np.zeros(padding)]),
    ))
    return batches


def test_streaming_matches_one_shot(x64):
    features, labels = make_stream_data()
    batches = uneven_batches(features, labels)
    assert sum(len(batch[1]) for batch in batches) > len(labels)

    streamed = metrics.accumulate_class_statistics(
        lambda: batches, STREAM_CLASSES, dtype=jnp.float64
    )
    one_shot = metrics.class_statistics(jnp.asarray(features), labels, STREAM_CLASSES)
    for field in metrics.ClassStatistics._fields:
        np.testing.assert_allclose(
            getattr(streamed, field), getattr(one_shot, field), rtol=1e-12,
            err_msg=field,
        )


def test_streaming_weighted_global_mean(x64):
    features, labels = make_stream_data()
    batches = uneven_batches(features, labels)
    streamed = metrics.accumulate_class_statistics(
        lambda: batches, STREAM_CLASSES, dtype=jnp.float64,
        weighted_global_mean=True,
    )
    np.testing.assert_allclose(streamed.global_mean, features.mean(axis=0), rtol=1e-12)


def test_streaming_float64_without_global_x64():
    assert not jax.config.jax_enable_x64
    features, labels = make_stream_data()
    batches = uneven_batches(features, labels)
    streamed = metrics.accumulate_class_statistics(
        lambda: batches, STREAM_CLASSES, dtype=jnp.float64
    )
    expected = reference_statistics(features, labels, STREAM_CLASSES)
    for field in metrics.ClassStatistics._fields:
        value = getattr(streamed, field)
        assert value.dtype == np.float64, field
        # rtol 1e-12 fails if any step ran in float32.
        np.testing.assert_allclose(value, expected[field], rtol=1e-12, err_msg=field)
    assert not jax.config.jax_enable_x64


def test_streaming_float32_dtype():
    features, labels = make_stream_data()
    batches = uneven_batches(features, labels)
    streamed = metrics.accumulate_class_statistics(
        lambda: batches, STREAM_CLASSES, dtype=jnp.float32
    )
    expected = reference_statistics(features, labels, STREAM_CLASSES)
    for field in metrics.ClassStatistics._fields:
        value = getattr(streamed, field)
        assert value.dtype == np.float32, field
        np.testing.assert_allclose(value, expected[field], rtol=1e-4, err_msg=field)


def test_streaming_rejects_other_dtypes():
    with pytest.raises(ValueError, match="float32 or float64"):
        metrics.StreamingClassStatistics(STREAM_CLASSES, STREAM_DIM, dtype=jnp.int32)


# ---------------------------------------------------------------------------
# Errors.


def test_empty_class_is_named():
    features, labels = make_stream_data()
    keep = labels != 2
    batches = [(features[keep], labels[keep])]
    with pytest.raises(ValueError, match=r"Class\(es\) \[2\] have no samples"):
        metrics.accumulate_class_statistics(lambda: batches, STREAM_CLASSES)


def test_empty_classes_in_one_shot_counts():
    features, labels = make_stream_data()
    keep = (labels != 0) & (labels != 3)
    stats = metrics.class_statistics(
        jnp.asarray(features[keep]), labels[keep], STREAM_CLASSES
    )
    with pytest.raises(ValueError, match=r"Class\(es\) \[0, 3\] have no samples"):
        metrics.check_class_counts(stats.counts)


@pytest.mark.parametrize("bad_label", [4, -1])
def test_out_of_range_label_is_named(bad_label):
    features, labels = make_stream_data()
    labels = labels.copy()
    labels[7] = bad_label
    accumulator = metrics.StreamingClassStatistics(STREAM_CLASSES, STREAM_DIM)
    with pytest.raises(ValueError, match=rf"\[{bad_label}\].*\[0, 4\)"):
        accumulator.update_means(features[:10], labels[:10])


def test_check_labels():
    metrics.check_labels(np.array([0, 1, 2]), 3)
    metrics.check_labels(np.array([0, 5]), 3, weights=np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"\[3, 5\].*\[0, 3\)"):
        metrics.check_labels(np.array([0, 5, 3, 5]), 3)
    with pytest.raises(ValueError, match="must be integers"):
        metrics.check_labels(np.array([0.0, 1.0]), 3)


def test_covariance_before_means_raises():
    features, labels = make_stream_data()
    accumulator = metrics.StreamingClassStatistics(STREAM_CLASSES, STREAM_DIM)
    with pytest.raises(RuntimeError, match="before any update_means"):
        accumulator.update_covariance(features[:10], labels[:10])
    with pytest.raises(RuntimeError, match="needs both passes"):
        accumulator.result()


def test_means_after_covariance_raises():
    features, labels = make_stream_data()
    accumulator = metrics.StreamingClassStatistics(STREAM_CLASSES, STREAM_DIM)
    accumulator.update_means(features, labels)
    accumulator.update_covariance(features, labels)
    with pytest.raises(RuntimeError, match="after update_covariance"):
        accumulator.update_means(features, labels)


def test_passes_with_different_data_raise():
    features, labels = make_stream_data()
    accumulator = metrics.StreamingClassStatistics(STREAM_CLASSES, STREAM_DIM)
    accumulator.update_means(features, labels)
    accumulator.update_covariance(features[:20], labels[:20])
    with pytest.raises(ValueError, match="different per-class counts"):
        accumulator.result()


def test_negative_weights_raise():
    features, labels = make_stream_data()
    weights = np.ones(len(labels))
    weights[3] = -1.0
    accumulator = metrics.StreamingClassStatistics(STREAM_CLASSES, STREAM_DIM)
    with pytest.raises(ValueError, match="nonnegative"):
        accumulator.update_means(features, labels, weights)
