"""A restricted unpickler for the pickled label / transcript files of some corpora (UR-FUNNY).

A pickle is a small program: opening one with the standard loader can import any module and call
any function the file names (``os.system`` included). ``safe_load`` opens it with an unpickler
whose ``find_class`` resolves a global only from a fixed table and refuses everything else with a
``CorpusError`` naming the file and the refused global, e.g. ``refused to load posix.system from
data_folds.pkl: only built-in containers, strings and numbers are allowed``.

The table:

* built-in containers, strings and numbers: ``dict``, ``list``, ``tuple``, ``set``, ``frozenset``,
  ``str``, ``bytes``, ``bytearray``, ``int``, ``float``, ``bool``, ``complex`` (``None``/``True``/
  ``False`` and most containers come from opcodes and need no global), ``collections.OrderedDict``;
* ``_codecs.encode``, restricted to Latin-1: protocol 0-2 pickles written by Python 3 store
  ``bytes`` as ``_codecs.encode(text, "latin1")``; any other codec is refused;
* with ``allow_numpy=True`` (the default), the names NumPy's own pickles use for arrays and
  scalars (``numpy.ndarray``, ``numpy.dtype``, ``numpy[._]core.multiarray._reconstruct`` /
  ``scalar``, ``numpy[._]core.numeric._frombuffer``). These do **not** resolve to NumPy's
  functions: NumPy's unpickling trusts its input (a crafted dtype state or an ``ndarray(...,
  buffer=...)`` call turns raw bytes into object pointers and crashes the interpreter). They
  resolve to stand-ins of this module that record what the file asks for; after loading, every
  request is checked and rebuilt with ``numpy.frombuffer`` for plain dtypes only (bool, integers,
  floats, complex, fixed-width ``str``/``bytes``) or, for object arrays, from the list of items
  the pickle holds (items that went through this same filter). Structured, void, datetime and
  other dtypes are refused.

Names are matched exactly (never imported by the name the file gives, never looked up through
dotted attribute paths), so a file cannot reach anything outside the table. Python 2 pickles work
(``__builtin__`` names; ``encoding="latin1"`` for old ``str`` objects, as Python 2 NumPy arrays
need; text decoded this way is repaired by ``pipeline.corpora.common.repair_text``).

Not protected against: a hostile file can still ask for a large allocation, which fails with
``MemoryError`` (reported as an unreadable pickle) rather than running code.
"""
from __future__ import annotations

import collections
import io
import math
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.corpora.base import CorpusError

REFUSED_HINT = "only built-in containers, strings and numbers are allowed"
_LATIN1 = {"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"}
# plain dtypes NumPy writes as ``dtype(spec, False, True)``: bool, ints, floats, complex, str, bytes
_PLAIN_DTYPE = re.compile(r"^(b1|[iu][1248]|f[248]|c(8|16)|U\d+|S\d+)$")
_OBJECT_DTYPE = re.compile(r"^O8?$")
_MAX_NDIM = 32


class _Refused(pickle.UnpicklingError):
    """A request of the file that this module will not honour (turned into a ``CorpusError``)."""


# =========================================================================== stand-ins


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """The one use of ``_codecs.encode`` admitted: how Python 3 pickles ``bytes`` at protocol < 3."""
    if not isinstance(text, str) or not isinstance(encoding, str) or encoding.lower() not in _LATIN1:
        raise _Refused(f"_codecs.encode is only allowed as encode(str, 'latin1'), got encoding {encoding!r}")
    return text.encode("latin1")


class _NdarrayToken:
    """What ``numpy.ndarray`` resolves to: only an argument for ``_reconstruct``, never callable."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_NdarrayToken":
        raise _Refused("numpy.ndarray(...) may not be called by a pickle (it turns raw bytes into "
                       "object pointers); only NumPy's own _reconstruct form is accepted")


class _DtypeRequest:
    """``numpy.dtype(spec, align, copy)`` as the file asked for it, plus its BUILD state."""

    def __init__(self, spec: Any = None, align: Any = False, copy: Any = True) -> None:
        self.spec = spec
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def resolve(self, *, allow_object: bool) -> np.dtype:
        spec = getattr(self, "spec", None)
        if not isinstance(spec, str):
            raise _Refused(f"dtype spec {spec!r} is not a string")
        byteorder, elsize = "=", -1
        state = getattr(self, "state", None)
        if state is not None:
            if not isinstance(state, tuple) or len(state) != 8 or state[0] != 3:
                raise _Refused(f"dtype {spec!r}: unsupported dtype state {state!r} "
                               f"(only plain, unstructured dtypes are allowed)")
            _, byteorder, subarray, names, fields, elsize, _alignment, _flags = state
            if subarray is not None or names is not None or fields is not None:
                raise _Refused(f"dtype {spec!r}: structured / sub-array dtypes are not allowed")
            if byteorder not in ("<", ">", "|", "="):
                raise _Refused(f"dtype {spec!r}: bad byte order {byteorder!r}")
        if _OBJECT_DTYPE.match(spec):
            if not allow_object:
                raise _Refused("object dtype is only allowed for arrays pickled as a list of items")
            return np.dtype(object)
        if not _PLAIN_DTYPE.match(spec):
            raise _Refused(f"dtype {spec!r} is not allowed (only bool, integers, floats, complex, str, bytes)")
        dt = np.dtype(spec)
        if isinstance(elsize, int) and elsize > 0 and dt.kind in "US" and elsize != dt.itemsize:
            dt = np.dtype(f"{dt.kind}{elsize // 4 if dt.kind == 'U' else elsize}")
        if byteorder in ("<", ">"):
            dt = dt.newbyteorder(byteorder)
        return dt


class _ArrayRequest:
    """``numpy._core.multiarray._reconstruct(ndarray, ...)`` plus the array state BUILD gives it."""

    def __init__(self) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _reconstruct(subtype: Any, shape: Any = None, code: Any = None) -> _ArrayRequest:
    if subtype is not _NdarrayToken:
        raise _Refused(f"_reconstruct of {subtype!r}: only numpy.ndarray is allowed")
    return _ArrayRequest()


def _raw_bytes(data: Any, what: str) -> bytes:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):  # a Python 2 str read with encoding="latin1"
        return data.encode("latin1")
    raise _Refused(f"{what}: raw data is {type(data).__name__}, expected bytes")


def _checked_shape(shape: Any, what: str) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if (not isinstance(shape, tuple) or len(shape) > _MAX_NDIM
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise _Refused(f"{what}: bad shape {shape!r}")
    return shape


def _from_bytes(data: Any, dtype: np.dtype, shape: tuple[int, ...], order: str, what: str) -> np.ndarray:
    raw = _raw_bytes(data, what)
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
        raise _Refused(f"{what}: {len(raw)} bytes of data for shape {shape} of {dtype} "
                       f"({count * dtype.itemsize} expected)")
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape, order=order).copy(order="A")


def _scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, _DtypeRequest):
        raise _Refused("numpy scalar without a numpy dtype")
    return _from_bytes(data, dtype.resolve(allow_object=False), (1,), "C", "numpy scalar")[0]


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, _DtypeRequest):
        raise _Refused("numpy array without a numpy dtype")
    if order not in ("C", "F"):
        raise _Refused(f"numpy array: bad order {order!r}")
    return _from_bytes(buf, dtype.resolve(allow_object=False), _checked_shape(shape, "numpy array"),
                       order, "numpy array")


def _build_array(request: _ArrayRequest, resolve: Any) -> np.ndarray:
    state = request.state
    if isinstance(state, tuple) and len(state) == 5:
        state = state[1:]  # (version, shape, dtype, is_fortran, data) -> without the version
    if not isinstance(state, tuple) or len(state) != 4:
        raise _Refused(f"numpy array: unsupported array state {type(state).__name__}")
    shape, dtype, fortran, data = state
    if not isinstance(dtype, _DtypeRequest):
        raise _Refused("numpy array without a numpy dtype")
    shape = _checked_shape(shape, "numpy array")
    order = "F" if fortran else "C"
    dt = dtype.resolve(allow_object=True)
    if dt != np.dtype(object):
        return _from_bytes(data, dt, shape, order, "numpy array")
    if not isinstance(data, list) or len(data) != math.prod(shape):
        raise _Refused(f"numpy object array: items must be a list of {math.prod(shape)}")
    flat = np.empty(len(data), dtype=object)
    for i, item in enumerate(data):
        flat[i] = resolve(item)
    return flat.reshape(shape, order=order)


# =========================================================================== tables


def _builtin_table() -> dict[tuple[str, str], Any]:
    names = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset, "str": str,
             "bytes": bytes, "bytearray": bytearray, "int": int, "float": float, "bool": bool,
             "complex": complex}
    table: dict[tuple[str, str], Any] = {}
    for module in ("builtins", "__builtin__"):  # Python 3 / Python 2 spelling
        for name, obj in names.items():
            table[(module, name)] = obj
    table[("__builtin__", "unicode")] = str
    table[("__builtin__", "long")] = int
    table[("collections", "OrderedDict")] = collections.OrderedDict
    table[("_codecs", "encode")] = _latin1_encode
    return table


def _numpy_table() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _NdarrayToken, ("numpy", "dtype"): _DtypeRequest}
    for core in ("numpy.core", "numpy._core"):  # NumPy 1.x / 2.x module paths
        table[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        table[(f"{core}.multiarray", "scalar")] = _scalar
        table[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    return table


def allowed_globals(allow_numpy: bool = True) -> list[str]:
    """``module.name`` of every global ``safe_load`` admits."""
    table = _builtin_table() | (_numpy_table() if allow_numpy else {})
    return sorted(f"{m}.{n}" for m, n in table)


# =========================================================================== the unpickler


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only this module's table.

    ``source`` names the file in error messages. Use ``safe_load``: it also turns the NumPy
    stand-ins into checked arrays.
    """

    def __init__(self, file: io.BufferedIOBase, *, source: str, allow_numpy: bool = True,
                 encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding)
        self.source = source
        self.allowed = _builtin_table() | (_numpy_table() if allow_numpy else {})

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise CorpusError(f"refused to load {module}.{name} from {self.source}: {REFUSED_HINT}"
                              + (" (NumPy: plain arrays and scalars only)" if module.startswith("numpy") else "")
                              ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise CorpusError(f"refused a persistent id in {self.source}: {REFUSED_HINT}")


def _resolve_requests(obj: Any) -> Any:
    """Replace every NumPy stand-in in the loaded structure by its checked array / dtype."""
    done: dict[int, Any] = {}  # id of a stand-in or mutable container -> its replacement

    def walk(x: Any) -> Any:
        key = id(x)
        if key in done:
            return done[key]
        if isinstance(x, _ArrayRequest):
            done[key] = out = _build_array(x, walk)
            return out
        if isinstance(x, _DtypeRequest):
            done[key] = out = x.resolve(allow_object=True)
            return out
        if isinstance(x, list):
            done[key] = x
            for i, item in enumerate(x):
                x[i] = walk(item)
            return x
        if isinstance(x, dict):
            done[key] = x
            items = [(walk(k), walk(v)) for k, v in x.items()]
            x.clear()
            x.update(items)
            return x
        if isinstance(x, tuple):
            return tuple(walk(i) for i in x)
        if isinstance(x, (set, frozenset)):
            return type(x)(walk(i) for i in x)
        return x

    return walk(obj)


def safe_load(path: str | Path, *, allow_numpy: bool = True, encoding: str = "latin1") -> Any:
    """Unpickle ``path`` with ``RestrictedUnpickler`` (see the module docstring).

    Raises ``CorpusError`` naming the file for a missing / unreadable file, a refused global or a
    malformed pickle.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"{path}: file not found") from None
    except OSError as e:
        raise CorpusError(f"{path}: cannot read ({e})") from None
    unpickler = RestrictedUnpickler(io.BytesIO(data), source=str(path), allow_numpy=allow_numpy,
                                    encoding=encoding)
    try:
        return _resolve_requests(unpickler.load())
    except CorpusError:
        raise
    except _Refused as e:
        raise CorpusError(f"refused to load data from {path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeDecodeError, MemoryError, OverflowError, RecursionError) as e:
        raise CorpusError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
