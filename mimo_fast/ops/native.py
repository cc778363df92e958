"""The one marshaller for calls into the compiled kernels (``mimo_fast._C``, ``mimo_fast._C_cuda``).

A :class:`Signature` names a binding's tensors and scalars in block order; :meth:`Signature.call`
checks every tensor, packs ONE argument block (``bytes``) and calls the binding with it, which
reads the block through ``csrc/common/args.h`` (``ArgView``) by the same names, in the same order::

    from mimo_fast import _ext
    from mimo_fast.ops import native
    from mimo_fast.ops.threads import num_threads

    SCALE = native.Signature("scale_rows", "x w >out >info:int32", "B K eps:f nthreads")

    def scale_rows(x, w, eps):                    # x (B, K), w (K,): any layout, float32/64
        B, K = x.shape
        out, info = x.new_empty(B, K), torch.empty(B, dtype=torch.int32)
        SCALE.call(_ext.C.scale_rows, x, w, out, info, B, K, eps, num_threads())
        return out, info

    // C++: constexpr Layout kScale{"scale_rows", "x w out info", "B K eps nthreads"};
    //      void scale_rows(const py::bytes& b) { const ArgView a(b, kScale); a.in<float>(0) ... }

Tensor words (``[prefix]name[:kind][?|*]``):

* no prefix -- an input, read only: made contiguous (conjugate/negative bits resolved, copied
  when needed; the copy lives until the binding returns);
* ``>`` -- an output, written in place: must already be contiguous with no conj/neg bit, and is
  refused otherwise (a copy would lose what the kernel writes);
* ``~`` -- a strided view: passed as is with its sizes and strides (at most 8 dims), never copied.
* kind: ``T`` (default; the call's real floating dtype, float32 or float64, the same for every
  ``T`` tensor), ``complex`` (the complex dtype of ``T``; the kernel reads its interleaved
  re/im memory), or a fixed dtype name (``int32``, ``bool``, ``uint8``, ...);
* ``?`` -- optional (``None`` passes a null pointer); ``*`` -- variadic (last word only: the
  caller passes a sequence).

Scalar words: ``name`` (int64) or ``name:f`` (float64). Every tensor must be on the
signature's device (one CUDA device for ``device="cuda"``); ``call(..., device="cpu")`` runs
a CUDA binding's host emulation on CPU tensors. Every refusal names the argument.

The block (version 1; ``csrc/common/args.h`` has the C++ side): 8-byte slots ``[magic+version,
layout hash, #tensors, #scalars]``, per tensor ``ptr, code | ndims << 8, numel`` (+ sizes and
strides for views), then the scalars. The layout hash (FNV-1a of ``name(tensors;scalars)``)
lets the C++ side refuse a block built for other names or another order.
"""
from __future__ import annotations

import struct
from typing import Callable, NamedTuple, Optional, Union

import torch
from torch import Tensor

#: The dtype codes of the compiled modules: the one table (csrc/common/args.h mirrors it,
#: checked by tests/test_native.py through ``args_abi()``).
DTYPE_CODES: dict[torch.dtype, int] = {
    torch.float32: 0, torch.float64: 1, torch.complex64: 2, torch.complex128: 3,
    torch.int32: 4, torch.uint8: 5, torch.bool: 6,
}
NONE_CODE = 255
VERSION = 1
MAGIC = 0x6D66617267730000 | VERSION          # "mfargs" + version
MAX_DIMS = 8
MAX_TENSORS = 48

_REAL = (torch.float32, torch.float64)
_COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}
_REAL_OF = {c: r for r, c in _COMPLEX_OF.items()}
_IN, _OUT, _VIEW = 0, 1, 2
_T, _CX = "T", "complex"
_NONE_RECORD = (0, NONE_CODE, 0)


def dtype_code(dtype: torch.dtype) -> int:
    """The compiled modules' code for ``dtype`` (TypeError for one they do not read)."""
    try:
        return DTYPE_CODES[dtype]
    except KeyError:
        raise TypeError(f"the compiled kernels do not read dtype {dtype} "
                        f"(they read {', '.join(str(d) for d in DTYPE_CODES)})") from None


def _fnv1a(text: str) -> int:
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h - (1 << 64) if h >= 1 << 63 else h        # as the signed slot it travels in


class _Arg(NamedTuple):
    name: str
    mode: int
    kind: Union[str, torch.dtype]
    optional: bool
    variadic: bool


def _parse_tensor(word: str) -> _Arg:
    mode = {">": _OUT, "~": _VIEW}.get(word[0], _IN)
    w = word[1:] if mode != _IN else word
    optional, variadic = w.endswith("?"), w.endswith("*")
    w = w.rstrip("?*")
    name, _, kind = w.partition(":")
    if kind in ("", _T):
        k: Union[str, torch.dtype] = _T
    elif kind == _CX:
        k = _CX
    else:
        k = getattr(torch, kind, None)
        if k not in DTYPE_CODES:
            raise ValueError(f"tensor word {word!r}: unknown kind {kind!r}")
    return _Arg(name + ("*" if variadic else ""), mode, k, optional, variadic)


class Signature:
    """One binding's arguments (see the module docstring for the word grammar)."""

    def __init__(self, name: str, tensors: str, scalars: str = "", device: str = "cpu"):
        if device not in ("cpu", "cuda"):
            raise ValueError(f"{name}: device must be 'cpu' or 'cuda', got {device!r}")
        self.name, self.device = name, device
        self.args = tuple(_parse_tensor(w) for w in tensors.split())
        if any(a.variadic for a in self.args[:-1]):
            raise ValueError(f"{name}: only the last tensor may be variadic")
        words = scalars.split()
        self.scalars = tuple(w.partition(":")[0] for w in words)
        self._scalar_fmt = "".join("d" if w.endswith(":f") else "q" for w in words)
        self.layout = f"{name}({' '.join(a.name for a in self.args)};{' '.join(self.scalars)})"
        self.layout_hash = _fnv1a(self.layout)
        self._nt, self._ns = len(self.args), len(self.scalars)
        self._variadic = bool(self.args) and self.args[-1].variadic
        self._fixed = not self._variadic and all(a.mode != _VIEW for a in self.args)
        self._structs: dict[int, struct.Struct] = {}
        self._struct = self._struct_for(4 + 3 * self._nt) if self._fixed else None
        fast_ok = not self._variadic and not any(a.mode == _VIEW and a.optional for a in self.args)
        self._fast = _compile_fast(self) if fast_ok else None

    def __repr__(self) -> str:
        return f"Signature({self.layout}, device={self.device!r})"

    def _struct_for(self, nslots: int) -> struct.Struct:
        s = self._structs.get(nslots)
        if s is None:
            s = self._structs[nslots] = struct.Struct("<" + "q" * nslots + self._scalar_fmt)
        return s

    def pack(self, *args, device: Optional[str] = None) -> tuple[bytes, list]:
        """The argument block for ``args`` (tensors, then scalars, in signature order) and the
        tensors it points into that the caller must keep alive while the block is used."""
        if self._fast is not None and device is None:
            try:
                block = self._fast(*args)
            except (AttributeError, TypeError, struct.error):   # a non-tensor, a bad scalar, a bad count
                block = None
            if block is not None:
                return block, []
        return self._pack_checked(args, device)

    def _pack_checked(self, args: tuple, device: Optional[str]) -> tuple[bytes, list]:
        """The general path: every check one tensor at a time (the one source of the error
        messages), copies of inputs that need one, views, variadic tails, device overrides."""
        nt = self._nt
        if len(args) != nt + self._ns:
            raise TypeError(f"{self.name}: expected {nt} tensors ({' '.join(a.name for a in self.args)}) and "
                            f"{self._ns} scalars ({' '.join(self.scalars)}), got {len(args)} arguments")
        on_cpu = (device or self.device) == "cpu"
        if self._variadic:
            tail = args[nt - 1]
            if isinstance(tail, Tensor) or tail is None:
                raise TypeError(f"{self.name}: {self.args[-1].name} takes a sequence of tensors")
            tail = list(tail)
            if nt - 1 + len(tail) > MAX_TENSORS:
                raise ValueError(f"{self.name}: at most {MAX_TENSORS - nt + 1} tensors for {self.args[-1].name}")
            items = list(zip(self.args, args[:nt - 1])) + [(self.args[-1], t) for t in tail]
        else:
            items = zip(self.args, args)
        vals = [MAGIC, self.layout_hash, 0, self._ns]
        keep = []
        real = setter = index = None
        n = 0
        for spec, t in items:
            n += 1
            if t is None:
                if spec.optional:
                    vals += _NONE_RECORD
                    continue
                raise TypeError(f"{self.name}: {spec.name} is required, got None")
            if not isinstance(t, Tensor):
                raise TypeError(f"{self.name}: {spec.name} must be a torch.Tensor, got {type(t).__name__}")
            dt = t.dtype
            kind = spec.kind
            if kind is _T:
                if real is None:
                    if dt not in _REAL:
                        raise TypeError(f"{self.name}: {spec.name} must have dtype float32 or float64, got {dt}")
                    real, setter = dt, spec.name
                elif dt is not real:
                    raise TypeError(f"{self.name}: {spec.name} has dtype {dt} but {setter} has {real}; they must match")
            elif kind is _CX:
                if real is None:
                    if dt not in _REAL_OF:
                        raise TypeError(f"{self.name}: {spec.name} must have dtype complex64 or complex128, got {dt}")
                    real, setter = _REAL_OF[dt], spec.name
                elif dt is not _COMPLEX_OF[real]:
                    raise TypeError(f"{self.name}: {spec.name} must have dtype {_COMPLEX_OF[real]} "
                                    f"({setter} is {real if setter != spec.name else dt}), got {dt}")
            elif dt is not kind:
                raise TypeError(f"{self.name}: {spec.name} must have dtype {kind}, got {dt}")
            if on_cpu:
                if not t.is_cpu:
                    raise ValueError(f"{self.name}: {spec.name} is on {t.device}, this kernel takes cpu tensors")
            elif not t.is_cuda:
                raise ValueError(f"{self.name}: {spec.name} is on {t.device}, this kernel takes cuda tensors")
            else:
                i = t.get_device()
                if index is None:
                    index = i
                elif i != index:
                    raise ValueError(f"{self.name}: {spec.name} is on cuda:{i} but the other tensors are on "
                                     f"cuda:{index}; all must share one device")
            mode = spec.mode
            if mode == _IN:
                if not t.is_contiguous() or t.is_neg() or (kind is not _T and t.is_conj()):
                    t = t.resolve_conj().resolve_neg().contiguous()
                    keep.append(t)
                vals += (t.data_ptr(), DTYPE_CODES[dt], t.numel())
            elif mode == _OUT:
                if not t.is_contiguous() or t.is_neg() or (kind is not _T and t.is_conj()):
                    raise ValueError(f"{self.name}: output {spec.name} must be contiguous with no conjugate/negative "
                                     "bit (the kernel writes it in place; a copy would lose the result)")
                vals += (t.data_ptr(), DTYPE_CODES[dt], t.numel())
            else:
                nd = t.dim()
                if nd > MAX_DIMS:
                    raise ValueError(f"{self.name}: {spec.name} has {nd} dims; strided views carry at most {MAX_DIMS}")
                vals += (t.data_ptr(), DTYPE_CODES[dt] | nd << 8, t.numel(), *t.shape, *t.stride())
        vals[2] = n
        st = self._struct if self._fixed else self._struct_for(len(vals))
        scalars = args[nt:]
        try:
            return st.pack(*vals, *scalars), keep
        except struct.error:
            self._scalar_error(scalars)
            raise

    def _scalar_error(self, scalars) -> None:
        for name, fmt, v in zip(self.scalars, self._scalar_fmt, scalars):
            try:
                struct.pack("<" + fmt, v)
            except struct.error as exc:
                want = "a float" if fmt == "d" else "an int64"
                raise TypeError(f"{self.name}: scalar {name} must be {want}, got {v!r} ({exc})") from None

    def call(self, fn: Callable[[bytes], object], *args, device: Optional[str] = None):
        """Check ``args`` (tensors, then scalars, in signature order), pack them into one
        block and return ``fn(block)``; copies made for inputs live until ``fn`` returns."""
        if self._fast is not None and device is None:
            try:
                block = self._fast(*args)
            except (AttributeError, TypeError, struct.error):
                block = None
            if block is not None:
                return fn(block)
        block, keep = self._pack_checked(args, device)
        result = fn(block)
        del keep
        return result


def _compile_fast(sig: Signature) -> Callable[..., Optional[bytes]]:
    """A straight-line pack for the common case of a signature without a variadic tail: every
    tensor already right (dtype, device, contiguous, no conj/neg bit), so nothing is copied. It returns None
    for anything else and :meth:`Signature._pack_checked` takes over (copies, or the error
    naming the argument). Generated once per signature, as ``collections.namedtuple`` and
    ``dataclasses`` do, because a loop over the arguments cost about as much again as the
    checks themselves on the ~20-calls-a-detection EP path."""
    names = [f"t{i}" for i in range(sig._nt)]
    params = names + [f"s{i}" for i in range(sig._ns)]
    glb = {"F32": torch.float32, "F64": torch.float64, "CX": _COMPLEX_OF, "REAL_OF": _REAL_OF,
           "CODES": DTYPE_CODES, "ST": sig._struct, "STRUCT": sig._struct_for}
    lines = [f"def fast({', '.join(params)}):"]
    setter = next((i for i, a in enumerate(sig.args) if a.kind in (_T, _CX) and not a.optional), None)
    if setter is not None:
        t = names[setter]
        if sig.args[setter].kind is _T:
            lines += [f"    dt = {t}.dtype", "    if dt is not F32 and dt is not F64: return None"]
            if any(a.kind is _CX for a in sig.args):
                lines += ["    cdt = CX[dt]", "    ccode = CODES[cdt]"]
        else:
            lines += [f"    cdt = {t}.dtype", "    dt = REAL_OF.get(cdt)", "    if dt is None: return None",
                      "    ccode = CODES[cdt]"]
        lines += ["    code = CODES[dt]"]
    if sig.device == "cuda":
        first = next(i for i, a in enumerate(sig.args) if not a.optional)
        lines += [f"    dev = {names[first]}.get_device()", "    if dev < 0: return None"]
    record, views = [], []
    for i, (a, t) in enumerate(zip(sig.args, names)):
        if a.kind is _T:
            want, code = "dt", "code"
        elif a.kind is _CX:
            want, code = "cdt", "ccode"
        else:
            glb[f"D{i}"] = a.kind
            want, code = f"D{i}", str(DTYPE_CODES[a.kind])
        conds = [] if i == setter else [f"{t}.dtype is {want}"]    # the setter's dtype is checked above
        conds += [f"{t}.is_cpu"] if sig.device == "cpu" else [f"{t}.get_device() == dev"]
        if a.mode == _VIEW:        # passed as is, with its sizes and strides
            lines += [f"    if not ({' and '.join(conds)}): return None", f"    sh{i}, sd{i} = {t}.shape, {t}.stride()",
                      f"    if len(sh{i}) > {MAX_DIMS}: return None"]
            views.append(f"len(sh{i})")
            record += [f"{t}.data_ptr()", f"{code} | len(sh{i}) << 8", f"{t}.numel()", f"*sh{i}", f"*sd{i}"]
            continue
        conds += [f"{t}.is_contiguous()", f"not {t}.is_neg()"]
        if a.kind is _CX:
            conds += [f"not {t}.is_conj()"]
        test = " and ".join(conds)
        if a.optional:
            lines += [f"    if {t} is not None and not ({test}): return None"]
            record += [f"{t}.data_ptr() if {t} is not None else 0", f"{code} if {t} is not None else {NONE_CODE}",
                       f"{t}.numel() if {t} is not None else 0"]
        else:
            lines += [f"    if not ({test}): return None"]
            record += [f"{t}.data_ptr()", code, f"{t}.numel()"]
    head = [str(MAGIC), str(sig.layout_hash), str(sig._nt), str(sig._ns)]
    st = f"STRUCT({4 + 3 * sig._nt} + 2 * ({' + '.join(views)}))" if views else "ST"
    lines += [f"    return {st}.pack({', '.join(head + record + params[sig._nt:])})"]
    sig._fast_source = "\n".join(lines)
    exec(compile(sig._fast_source, f"<native fast pack: {sig.name}>", "exec"), glb)
    return glb["fast"]


def extension_info() -> dict:
    """How the compiled modules were built and what this CPU runs, for ``mimo-fast info``
    (the one place outside the kernels' glue that reads the extensions)."""
    from mimo_fast import _ext

    data = {
        "extension_cpu": dict(_ext.C.build_info) if _ext.C is not None else None,
        "extension_cpu_reason": _ext.C_REASON,
        "extension_cuda": dict(_ext.C_CUDA.build_info) if _ext.C_CUDA is not None else None,
        "extension_cuda_reason": _ext.C_CUDA_REASON,
    }
    if _ext.C is not None:
        data["cpu_avx2_fma"] = bool(_ext.C.cpu_has_avx2_fma())
        data["cpu_avx512"] = bool(_ext.C.cpu_has_avx512_core())
        data["openmp_threads"] = int(_ext.C.openmp_max_threads())
    return data
