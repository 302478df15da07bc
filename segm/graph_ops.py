"""TensorFlow products with graphs.py's matrices: sparse matmul, fixed 3x3 stencils, Chebyshev."""
import numpy as np

from segm.tf_quiet import tf


def to_sparse_tensor(matrix):
    """A scipy sparse matrix as a float32 tf.SparseTensor with sorted (row, col) indices."""
    coo = matrix.tocoo()
    order = np.lexsort((coo.col, coo.row))
    indices = np.stack([coo.row[order], coo.col[order]], axis=1).astype(np.int64)
    return tf.SparseTensor(indices, coo.data[order].astype(np.float32), coo.shape)


def csr_matrix(matrix):
    """A scipy sparse matrix as TensorFlow's CSR matrix, a variant tensor made in the graph."""
    st = to_sparse_tensor(matrix)
    return tf.raw_ops.SparseTensorToCSRSparseMatrix(
        indices=st.indices, values=st.values, dense_shape=st.dense_shape)


def sparse_matmul(matrix, x):
    """matrix @ x[b] for every image b in one sparse-dense matmul: (B, ..., C) -> (B, N, C)."""
    n, m, c = matrix.shape[0], matrix.shape[1], x.shape[-1]

    # The CSR product is ~7x faster on CPU than tf.sparse.sparse_dense_matmul (32x32
    # grid, 16-32 channels, batch 64); TensorFlow has no gradient for it, so here it is.
    @tf.custom_gradient
    def product(cols):
        def gradient(upstream):                                                     # (N, B*C)
            return tf.raw_ops.SparseMatrixMatMul(a=csr_matrix(matrix.T), b=upstream)
        return tf.raw_ops.SparseMatrixMatMul(a=csr_matrix(matrix), b=cols), gradient

    # Pixels become rows and (image, channel) pairs columns, so the whole batch is one product.
    cols = tf.reshape(tf.transpose(tf.reshape(x, (-1, m, c)), (1, 0, 2)), (m, -1))  # (M, B*C)
    y = product(cols)                                                               # (N, B*C)
    return tf.transpose(tf.reshape(y, (n, -1, c)), (1, 0, 2))                        # (B, N, C)


def depthwise(x, kernel):
    """x convolved channel by channel with one fixed 3x3 kernel, zero padded."""
    c = x.shape[-1]
    k = tf.tile(tf.constant(kernel, x.dtype)[:, :, None, None], (1, 1, c, 1))  # (3, 3, C, 1)
    return tf.nn.depthwise_conv2d(x, k, (1, 1, 1, 1), "SAME")


def chebyshev(x, apply, kernel):
    """sum_k T_k W_k, T_0 = X, T_1 = L~ X, T_k = 2 L~ T_{k-1} - T_{k-2}; L~ T = apply(T)."""
    terms = [x]
    if kernel.shape[0] > 1:
        terms.append(apply(x))
    for _ in range(2, kernel.shape[0]):
        terms.append(2.0 * apply(terms[-1]) - terms[-2])
    # one matmul per order: stacking the terms first costs a copy and is ~1.8x slower here
    return tf.add_n([tf.tensordot(t, w, 1) for t, w in zip(terms, tf.unstack(kernel))])
