"""One helper for packages that gather their public names from submodules."""


def present_as_package(namespace):
    """Makes each name in `namespace["__all__"]` that a submodule defined say it is the package's.

    `keras_lottery.export` and `keras_lottery.stability` re-export names from
    their submodules; setting `__module__` to the package keeps their
    documented (docs/api.md) and pickled paths at `keras_lottery.<package>.<name>`
    whichever submodule holds the code.

    Args:
      namespace: the package's `globals()`.
    """
    package = namespace["__name__"]
    for name in namespace["__all__"]:
        obj = namespace[name]
        if getattr(obj, "__module__", "").startswith(package + "."):
            obj.__module__ = package
