"""Build the compiled core; all metadata lives in pyproject.toml."""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# LBSDISPATCH_DEBUG=1 turns the safety checks back on (bounds, wraparound,
# initialised memoryviews) so the test suite can be run against a checked build.
DEBUG = os.environ.get("LBSDISPATCH_DEBUG", "0") not in ("", "0")

directives = {
    "language_level": 3,
    "embedsignature": True,
    "cdivision": True,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
}

extensions = [
    Extension(
        "lbsdispatch._kdtree",
        ["src/lbsdispatch/_kdtree.pyx"],
        depends=["src/lbsdispatch/_dispatch.pxi", "src/lbsdispatch/_islands.pxi"],
        # OpenMP: the island path of assign_batch serves islands on several threads
        extra_compile_args=(["-O3"] if not DEBUG else ["-O0", "-g"]) + ["-fopenmp"],
        extra_link_args=["-fopenmp"],
    ),
    # the optimal-mode solver (issue 7): arrays in, arrays out, no tree
    Extension(
        "lbsdispatch._flow",
        ["src/lbsdispatch/_flow.pyx"],
        extra_compile_args=["-O3"] if not DEBUG else ["-O0", "-g"],
    ),
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives, annotate=False))
