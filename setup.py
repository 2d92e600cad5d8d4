"""Builds qmtik's one optional compiled module, qmtik._fused (the training step's elementwise
loops in one pass each). Everything else is in pyproject.toml. Without a C compiler the build
skips it and qmtik runs the same arithmetic in NumPy (qmtik/fused.py)."""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildFused(build_ext):
    """Compile without contracting a * b + c into fused multiply-adds, which would round
    differently from NumPy's separate float32 operations (MSVC does not contract by default);
    -fno-math-errno and -fno-trapping-math let the loops vectorize (they change errno and
    floating-point exception flags only, never a value)."""

    def build_extensions(self):
        if self.compiler.compiler_type != "msvc":
            for extension in self.extensions:
                extension.extra_compile_args += ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]
        super().build_extensions()


setup(
    ext_modules=[Extension("qmtik._fused", ["src/qmtik/_fused.c"], optional=True)],
    cmdclass={"build_ext": BuildFused},
)
