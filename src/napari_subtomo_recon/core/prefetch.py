"""A cache-line prefetch hint for Numba kernels: ``prefetch(arr, i)``.

Numba has no prefetch; this intrinsic emits LLVM's ``llvm.prefetch`` (read, keep in all
cache levels) for the line holding element ``i`` of a C-contiguous array's data, counted
flat.  A hint only: the instruction never faults and changes no result, so kernels that
use it compute exactly what they compute without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def _prefetch(
    typingctx: Any, arr: types.Array, idx: types.Integer
) -> tuple[Any, Callable[..., Any]] | None:
    """``prefetch(arr, i)`` in a Numba kernel: start loading ``arr.ravel()[i]``'s line (for
    a C-contiguous array; elsewhere i counts elements from the data pointer: a mere hint)."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None  # a typing error in the kernel
    sig = types.void(arr, idx)

    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        name = "llvm.prefetch.p0"
        fn = builder.module.globals.get(name) or ir.Function(builder.module, fnty, name)
        # (address, 0 = read, 3 = keep in every level, 1 = data)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


# (the intrinsic's Python signature is its typing function's, not the kernels' call)
prefetch: Any = _prefetch
