// GPTQ's column-by-column error feedback with lazy block updates (Frantar et
// al., ICLR 2023, "lazy batch-updates"), shared by GPTQ, TACQ and BPDQ.
//
// With U the upper factor of the damped inverse Hessian (U^T U = H^-1, see
// core/hessian.hpp), quantizing input column i to q leaves the scaled error
// err = (w - q) / U(i, i), and every later column j absorbs it:
// W[:, j] -= err * U(i, j). Within a block of columns [i1, i2) that update is
// applied at once (one axpy per later column of the block); for the columns
// after the block it is deferred and applied as one product at the end of
// the block: W[:, i2:] -= Err · U[i1:i2, i2:], a GEMM.
//
// The working matrix is stored transposed, Wt = W^T (in x out, row-major):
// row j holds input column j over the outputs, so one column is contiguous
// for the quantizer and the axpys. Output rows are independent in this
// scheme, so the work is split into fixed panels of outputs, which bounds the
// in-block working set (block width x panel) to the L2 cache and gives the
// threads independent work. The panel size does not depend on the thread
// count, so results are bit-identical whatever the number of threads.
#pragma once

#include "lowbit/core/detail/internal_header_check.hpp"

#include <Eigen/Core>
#include <algorithm>

#include "lowbit/core/detail/parallel.hpp"
#include "lowbit/core/types.hpp"

namespace lowbit::detail {

using MatrixFMap = Eigen::Ref<MatrixF>;  // a writable row-major block (inner stride 1)

// In-block feedback after column k of a block was quantized with scaled
// error `err` (one entry per output of the panel):
// block.row(j) -= u_row(j) * err for every later column j of the block.
// `block` is the panel's slice of Wt over the block's columns; `u_row` is
// U(i1 + k, i1 .. i2) (the whole block row; entries up to k are not used).
inline void feed_back_in_block(MatrixFMap block, Index k, const Eigen::Ref<const VectorF>& u_row,
                               const Eigen::Ref<const Eigen::RowVectorXf>& err) {
  for (Index j = k + 1; j < block.rows(); ++j) block.row(j) -= u_row(j) * err;
}

// dst -= lhs_t^T * rhs, in slices of at most 256 along the depth: then Eigen's
// product keeps the whole depth of a slice in one register-accumulation pass
// whether or not it splits the product over threads, so the result bits do
// not depend on the thread count (Eigen caps that depth at 288-320 only when
// threaded).
inline void subtract_transposed_product(MatrixFMap dst, const Eigen::Ref<const MatrixF>& lhs_t,
                                        const Eigen::Ref<const MatrixF>& rhs) {
  constexpr Index max_depth = 256;
  if (dst.size() == 0) return;
  for (Index k = 0; k < rhs.rows(); k += max_depth) {
    const Index depth = std::min(max_depth, rhs.rows() - k);
    dst.noalias() -= lhs_t.middleRows(k, depth).transpose() * rhs.middleRows(k, depth);
  }
}

// Lazy block update at the end of a block: rest -= u_block^T * errors, i.e.
// W[:, i2:] -= Err · U[i1:i2, i2:] in the transposed layout, where `rest` is
// the panel's slice of Wt for columns i2.., `u_block` = U[i1:i2, i2:] and
// `errors` the block's scaled errors (block width x panel).
inline void propagate_block_errors(MatrixFMap rest, const Eigen::Ref<const MatrixF>& u_block,
                                   const Eigen::Ref<const MatrixF>& errors) {
  subtract_transposed_product(rest, u_block, errors);
}

// Outputs per panel: a 128-column block of one panel (128 KB of floats) stays
// in L2, and the block GEMMs keep a useful width. Fixed, never derived from
// the thread count (see core/detail/parallel.hpp).
constexpr Index error_feedback_panel = 256;

inline Index panel_count(Index outputs) {
  return (outputs + error_feedback_panel - 1) / error_feedback_panel;
}

// Calls work(first_output, outputs) for every panel, in parallel. With a
// single panel Eigen may split a product over threads, which changes no
// result bit (see subtract_transposed_product; tested).
template <class Work>
void for_each_panel(Index outputs, Work&& work) {
  parallel_chunks(outputs, error_feedback_panel, work);
}

// dst = src^T through cache-sized tiles (a plain transposed copy of a large
// row-major matrix reads one column at a time, several times slower).
template <class Dst, class Src>
void transpose_tiled(Dst& dst, const Src& src) {
  constexpr Index tile = 32;
  dst.resize(src.cols(), src.rows());
  for (Index i = 0; i < src.rows(); i += tile)
    for (Index j = 0; j < src.cols(); j += tile) {
      const Index rows = std::min(tile, src.rows() - i), cols = std::min(tile, src.cols() - j);
      dst.block(j, i, cols, rows) = src.block(i, j, rows, cols).transpose();
    }
}

}  // namespace lowbit::detail
