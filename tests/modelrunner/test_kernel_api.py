"""The compiled kernels' interface: ``kernels/api.h`` is what ``native.py`` calls through ctypes."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess

import pytest

from modelrunner import native

HEADER = native.KERNELS / "api.h"
#: C types of the header -> the ctypes type native.py must give them (pointers are addresses).
C_TYPES: dict[str, type | None] = {"int": ctypes.c_int, "long": ctypes.c_long, "float": ctypes.c_float, "void": None}
_PROTOTYPE = re.compile(r"^(\w+)\s+(\w+)\s*\(([^)]*)\)\s*;", re.MULTILINE)


def parse_header(text: str) -> dict[str, tuple[str, list[str]]]:
    """``name: (return type, [argument type, ...])``; pointer types read as ``"pointer"``."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    text = re.sub(r"^\s*#.*$", " ", text, flags=re.MULTILINE)
    out = {}
    for ret, name, params in _PROTOTYPE.findall(text):
        params = " ".join(params.split())
        args = [] if params in ("", "void") else [_arg_type(p) for p in params.split(",")]
        out[name] = (ret, args)
    return out


def _arg_type(param: str) -> str:
    if "*" in param:
        return "pointer"
    *type_words, _name = param.split()
    words = [w for w in type_words if w != "const"]
    assert len(words) == 1 and words[0] in C_TYPES, f"unexpected parameter {param!r} in api.h"
    return words[0]


def _expected(c_type: str) -> type | None:
    return ctypes.c_void_p if c_type == "pointer" else C_TYPES[c_type]


def test_header_declares_the_functions_native_calls_with_the_same_types() -> None:
    header = parse_header(HEADER.read_text())
    assert set(header) == {"rnn_vector_width", "rnn_exp", "rnn_run", "wavenet_layers", "peak_fma"}
    assert list(native.SIGNATURES) == list(header), "native.SIGNATURES lists other functions than api.h"
    for name, (ret, args) in header.items():
        restype, argtypes = native.SIGNATURES[name]
        assert restype is _expected(ret), f"{name}: restype {restype} but api.h returns {ret}"
        assert len(argtypes) == len(args), f"{name}: {len(argtypes)} argtypes but api.h has {len(args)} arguments"
        for i, (have, want) in enumerate(zip(argtypes, args)):
            assert have is _expected(want), f"{name} argument {i + 1}: {have.__name__} but api.h says {want}"


def test_parser_reads_pointers_void_and_multiline_prototypes() -> None:
    text = "/* int hidden(int x); */\nint f(void);\nvoid g(const float *const *w,\n       long n, float k);\n"
    assert parse_header(text) == {"f": ("int", []), "g": ("void", ["pointer", "long", "float"])}


def test_kernels_are_built_against_the_header() -> None:
    """Each .c file includes api.h, and the header is part of the build's cache key."""
    assert HEADER in native.INPUTS and "-Werror=missing-prototypes" in native.FLAGS
    for source in native.SOURCES:
        assert '#include "api.h"' in source.read_text(), source.name


def test_loaded_library_uses_the_signatures() -> None:
    lib = native.library()
    if lib is None:
        pytest.skip(native.reason())
    for name, (restype, argtypes) in native.SIGNATURES.items():
        function = getattr(lib, name)
        assert function.restype is restype and list(function.argtypes) == argtypes


def test_peak_fma_counts_its_operations_and_keeps_its_operands() -> None:
    lib = native.library()
    if lib is None:
        pytest.skip(native.reason())
    sink = (ctypes.c_float * 4)(0.5, 0.25, 1.0, -1.0)
    chains = 12  # kernels/peak.c
    assert lib.peak_fma(1000, ctypes.addressof(sink)) == 1000 * chains * lib.rnn_vector_width() * 2
    assert list(sink)[:3] == [0.5, 0.25, 1.0]  # the seeds stay, so repeated runs do the same work
    # acc = 0.5 acc + 0.25 converges to 0.5 in every lane of every chain
    assert sink[3] == pytest.approx(0.5 * chains * lib.rnn_vector_width())


def test_compiler_rejects_a_definition_that_differs_from_the_header(tmp_path) -> None:
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    for path in native.INPUTS:
        (tmp_path / path.name).write_text(path.read_text())
    flags = ["-std=gnu11", "-fsyntax-only", "-Werror=missing-prototypes"]
    ok = subprocess.run([cc, *flags, *[p.name for p in native.SOURCES]], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    header = tmp_path / "api.h"
    header.write_text(header.read_text().replace("float *y, long n)", "float *y, int n)"))
    bad = subprocess.run([cc, *flags, "rnn.c"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0 and "rnn_exp" in bad.stderr
