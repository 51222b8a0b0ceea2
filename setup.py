"""The one compiled piece: TF Serving's REST float format at C speed (genserve/serving/_json_floats.c).

Optional: where no C compiler is found the build goes on without it, and genserve.serving.json_values
writes the same texts in Python (about 0.3 ms more per 784 floats). Everything else is in pyproject.toml.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("genserve.serving._json_floats", ["genserve/serving/_json_floats.c"], optional=True)])
