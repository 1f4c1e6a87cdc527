"""Build the compiled core; all metadata lives in pyproject.toml."""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# LBSDISPATCH_DEBUG=1 turns the safety checks back on (bounds, wraparound,
# initialised memoryviews) so the test suite can be run against a checked build.
DEBUG = os.environ.get("LBSDISPATCH_DEBUG", "0") not in ("", "0")



def openmp_flags():
    """``-fopenmp`` if the C compiler takes it (gcc does; Apple's clang does not),
    else none: without OpenMP, ``assign_batch(workers=N)`` serves its islands on
    one thread, with the same answers.  LBSDISPATCH_OPENMP=0 turns it off."""
    if os.environ.get("LBSDISPATCH_OPENMP", "1") in ("", "0"):
        return []
    import tempfile

    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    cc = new_compiler()
    customize_compiler(cc)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        try:
            objs = cc.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
            cc.link_executable(objs, os.path.join(tmp, "omp"), extra_postargs=["-fopenmp"])
        except Exception:           # CompileError, LinkError: no OpenMP here
            print("lbsdispatch: the C compiler has no OpenMP; workers run one at a time")
            return []
    return ["-fopenmp"]


OPENMP = openmp_flags()

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
        extra_compile_args=(["-O3"] if not DEBUG else ["-O0", "-g"]) + OPENMP,
        extra_link_args=OPENMP,
    ),
    # the optimal-mode solver (issue 7): arrays in, arrays out, no tree
    Extension(
        "lbsdispatch._flow",
        ["src/lbsdispatch/_flow.pyx"],
        extra_compile_args=["-O3"] if not DEBUG else ["-O0", "-g"],
    ),
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives, annotate=False))
