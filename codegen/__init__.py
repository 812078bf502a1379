"""ublk-bindings-gen: Python ctypes bindings from a Linux UAPI header.

The pipeline, one module per step:

``preprocess``  system ``cpp`` with ``-nostdinc`` and our own minimal ``include/``, keeping
                ``#define`` lines (``-dD``) and mapping output lines back to file:line
``attributes``  GCC ``packed`` / ``aligned(N)`` rewritten into C that pycparser parses
``parse``       pycparser AST -> ``model`` (plain dataclasses: records, enums, typedefs)
``layout``      gcc's x86-64 record layout against what ctypes will do; refuses differences
``cint``        C integer types and their conversions, shared by the two translators
``translate``   C expressions and ``static inline`` bodies -> typed Python source
``macros``      ``#define`` bodies -> constants, evaluated with C semantics
``families``    IntFlag/IntEnum groups inferred from macro name prefixes
``render``      the model -> a Python module through a jinja2 template
``cli``         ``ublk-bindings-gen``
"""

__version__ = "0.1.0"
