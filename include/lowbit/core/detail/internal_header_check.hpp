// Included first by every header under lowbit/*/detail/: those are internals
// of the public headers and refuse to be a translation unit's entry point, as
// Eigen's InternalHeaderCheck.h does. A public header defines
// LOWBIT_PUBLIC_HEADER before it includes one of them. (No include guard: the
// check runs wherever it is included.)
#ifndef LOWBIT_PUBLIC_HEADER
#error "lowbit detail headers are internal: include <lowbit/lowbit.hpp> or a public header"
#endif
