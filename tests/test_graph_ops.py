"""graph_ops.py: sparse tensors sorted and exact, and the CSR product's gradient is the transpose."""
import numpy as np

from segm import graph_ops
from segm import graphs
from segm.tf_quiet import tf

RNG = np.random.default_rng(0)


def test_sparse_tensor_is_sorted_and_exact():
    matrix = graphs.gcn_propagation(3, 4, 8)
    st = graph_ops.to_sparse_tensor(matrix)
    idx = st.indices.numpy()
    assert np.all(np.diff(idx[:, 0] * matrix.shape[1] + idx[:, 1]) > 0)
    np.testing.assert_allclose(tf.sparse.to_dense(st).numpy(), matrix.toarray())
    np.testing.assert_array_equal(tf.sparse.reorder(st).indices.numpy(), idx)


def test_sparse_matmul_gradient_is_the_transpose():
    matrix = graphs.cluster_mean(graphs.grid_pyramid(5, 6, 1)[0])          # not symmetric
    x = tf.constant(RNG.standard_normal((2, 30, 3)), tf.float32)
    weights = tf.constant(RNG.standard_normal((2, matrix.shape[0], 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(graph_ops.sparse_matmul(matrix, x) * weights)
    expected = np.einsum("nm,bnc->bmc", matrix.toarray(), weights.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), expected, atol=1e-5)
