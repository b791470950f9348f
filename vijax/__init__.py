"""vijax: variational inference in JAX.

Capabilities, each a subpackage or module:

- :mod:`vijax.cavi`: coordinate-ascent VI for the earthquake mixture model.
- :mod:`vijax.data`: embedded data sets and loaders.
"""

__version__ = "0.1.0"
