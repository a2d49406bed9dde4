"""Build of recurrax's optional native kernel; everything else is declared in pyproject.toml.

The extension ``recurrax.kernels._onednn_ext`` (XLA FFI handlers over oneDNN's RNN primitives)
is built where a C++ compiler, oneDNN's headers and library (the ``onednn-devel-cpu-gomp`` and
``onednn-cpu-gomp`` wheels, build requirements on Linux x86-64) and jaxlib's FFI headers are
present. It is optional: without any of them the install goes on, and ``recurrax.rnn`` runs its
pure-JAX scan (``recurrax.kernels.available()`` says why). setuptools is the tool because it is
already the build backend and builds one C++ file with no extra machinery.
"""

import importlib.metadata
import importlib.util
import os

from setuptools import Extension, setup


def _installed_file(distribution: str, name: str):
    """Absolute path of the file ``name`` (a path tail) installed by a (data-only) wheel, or None."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.as_posix().endswith(name):
            return os.path.normpath(os.fspath(dist.locate_file(file)))
    return None


def _native_extensions():
    header = _installed_file("onednn-devel-cpu-gomp", "include/oneapi/dnnl/dnnl.hpp")
    library = _installed_file("onednn-cpu-gomp", "libdnnl.so.3")
    onednn_include = header and os.path.dirname(os.path.dirname(os.path.dirname(header)))
    onednn_lib = library and os.path.dirname(library)
    jaxlib = importlib.util.find_spec("jaxlib")
    if not (onednn_include and onednn_lib and jaxlib and jaxlib.submodule_search_locations):
        print("recurrax: building without the oneDNN kernel (oneDNN or jaxlib's FFI headers not found)")
        return []
    ffi_include = os.path.join(list(jaxlib.submodule_search_locations)[0], "include")
    return [
        Extension(
            "recurrax.kernels._onednn_ext",
            sources=["recurrax/kernels/_onednn_ext.cc"],
            include_dirs=[onednn_include, ffi_include],
            library_dirs=[onednn_lib],
            libraries=[":libdnnl.so.3"],
            extra_compile_args=["-std=c++17", "-O2", "-Wno-attributes", "-Wno-return-type"],
            language="c++",
            optional=True,  # no compiler: install without the kernel, rnn uses the scan
        )
    ]


setup(ext_modules=_native_extensions())
