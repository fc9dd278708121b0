// How input columns map to quantization groups. Groups are contiguous runs
// of `group_size` columns, unless a column-to-group map g_idx is given (GPTQ
// act-order: groups contiguous in a permuted column order). Every group holds
// exactly group_size columns either way.
#pragma once

#include "lowbit/core/detail/internal_header_check.hpp"

#include <numeric>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"

namespace lowbit::detail {

inline Index group_of(const GroupIndex& g_idx, Index group_size, Index col) {
  return g_idx.empty() ? col / group_size : g_idx[static_cast<std::size_t>(col)];
}

// Checks group_size against cols and, when present, that g_idx assigns exactly
// group_size columns to every group.
inline void validate_grouping(const GroupIndex& g_idx, Index group_size, Index cols,
                              const char* owner) {
  require(group_size > 0 && cols % group_size == 0, owner, ": group_size ", group_size,
          " must be a positive divisor of in_features = ", cols);
  if (g_idx.empty()) return;
  require(static_cast<Index>(g_idx.size()) == cols, owner, ": g_idx has ", g_idx.size(),
          " entries, expected in_features = ", cols);
  const Index groups = cols / group_size;
  std::vector<Index> members(static_cast<std::size_t>(groups), 0);
  for (std::size_t j = 0; j < g_idx.size(); ++j) {
    require(g_idx[j] >= 0 && g_idx[j] < groups, owner, ": g_idx[", j, "] = ", g_idx[j],
            " is outside [0, ", groups, ")");
    ++members[static_cast<std::size_t>(g_idx[j])];
  }
  for (std::size_t g = 0; g < members.size(); ++g)
    require(members[g] == group_size, owner, ": g_idx puts ", members[g], " columns in group ", g,
            ", expected group_size = ", group_size);
}

// A column order in which every group is contiguous (identity without g_idx);
// stable, so columns keep their relative order inside a group.
inline std::vector<std::int32_t> group_contiguous_order(const GroupIndex& g_idx, Index group_size,
                                                        Index cols) {
  std::vector<std::int32_t> order(static_cast<std::size_t>(cols));
  std::iota(order.begin(), order.end(), 0);
  if (!g_idx.empty()) {
    std::vector<std::int32_t> next(static_cast<std::size_t>(cols / group_size));
    for (std::size_t g = 0; g < next.size(); ++g)
      next[g] = static_cast<std::int32_t>(g * static_cast<std::size_t>(group_size));
    for (std::int32_t j = 0; j < static_cast<std::int32_t>(cols); ++j)
      order[static_cast<std::size_t>(next[static_cast<std::size_t>(g_idx[j])]++)] = j;
  }
  return order;
}

}  // namespace lowbit::detail
