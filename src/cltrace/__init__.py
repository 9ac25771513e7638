"""cltrace: circuits in language models through cross-layer transcoders.

The Python API (docs/API.md)::

    import cltrace

    model = cltrace.load_model()                # the bundled model
    tc = cltrace.load_transcoder()              # the bundled CLT
    g = cltrace.attribute(model, tc, "When Mary and John went to the store, John gave a drink to")
    g.prune().save("graph.json")
    pairs = cltrace.make_pairs("ioi", n=10, model=model)
    res = cltrace.prune(model, tc, pairs, methods=["fap", "fap_synergy"], budgets=[50, 100])
    notes = cltrace.explain(model, tc, res.kept("fap_synergy", 100)[:5])

The names are imported on first use, so ``import cltrace`` stays quick.
"""

import os as _os
import sys as _sys
import types as _types

# On a small shared CPU, OpenMP threads that spin while waiting slow torch several-fold under
# load; passive waiting costs nothing when the machine is idle. It only takes effect if set
# before torch is first imported, which importing cltrace first ensures.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from cltrace.errors import CltraceError  # noqa: E402

# the API names, listed here so that importing cltrace does not import the API (and torch);
# tests/api checks that they are exactly cltrace.api.__all__
_API = (
    "AttributionGraph",
    "FeatureNote",
    "PruneResult",
    "PrunedGraph",
    "attribute",
    "explain",
    "load_model",
    "load_transcoder",
    "make_pairs",
)

__all__ = ["CltraceError", "__version__", *_API, "prune"]


class _CallablePackage(_types.ModuleType):
    """The ``cltrace.prune`` subpackage, also callable as :func:`cltrace.api.prune`.

    ``cltrace.prune`` names both the stage-I package and the API function; importing the
    package makes it an attribute of ``cltrace``, so the package itself takes the calls.
    """

    def __call__(self, *args, **kwargs):
        from cltrace.api import prune

        return prune(*args, **kwargs)


class _Package(_types.ModuleType):
    def __setattr__(self, name, value):
        if name == "prune" and isinstance(value, _types.ModuleType):
            value.__class__ = _CallablePackage
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _API:
        import cltrace.api

        return getattr(cltrace.api, name)
    if name == "prune":
        import cltrace.prune  # the import sets the attribute (a callable package, see above)

        return _sys.modules["cltrace.prune"]
    raise AttributeError(f"module 'cltrace' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
