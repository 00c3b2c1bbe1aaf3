"""The compiled answer scanner (backfill/decode/_fastlogs.c). Everything else is in pyproject.toml.

The extension is optional: where it does not build, workers decode with the Python path (backfill/decode/decoder.py),
which gives the same rows, only slower; a worker logs which one it uses.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "backfill.decode._fastlogs",
            ["backfill/decode/_fastlogs.c"],
            optional=True,
            extra_compile_args=["-O3", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
        )
    ]
)
