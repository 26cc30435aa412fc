#!/usr/bin/env python
"""Writes docs/api.md, the API reference, from the docstrings of keras_lottery.

Every public module of the package (not `_private` ones, not the CLI) gets a
section: its docstring, then each name in its `__all__` defined there, with
its signature and docstring; classes list their public methods and
properties. Docstrings are Google style (Args / Returns / Raises / Example),
rendered as they are inside the section.

    python scripts/gen_api_docs.py            # rewrite docs/api.md
    python scripts/gen_api_docs.py --check    # exit 1 if docs/api.md is stale
"""

import argparse
import importlib
import inspect
import os
import pkgutil
import re
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DEFAULT_OUT = os.path.join(ROOT, "docs", "api.md")
SKIP_MODULES = ("keras_lottery.cli", "keras_lottery.__main__")
SECTIONS_ORDER = ("imp", "schedule", "callback", "masks", "rewind", "wrap", "data", "models",
                  "report", "tensorboard", "progress", "convert", "tuning")


def public_modules():
    import keras_lottery

    names = []
    for info in pkgutil.iter_modules(keras_lottery.__path__):
        if info.name.startswith("_"):
            continue
        full = f"keras_lottery.{info.name}"
        if full.startswith(SKIP_MODULES):
            continue
        names.append(info.name)
    first = [n for n in SECTIONS_ORDER if n in names]
    return first + sorted(n for n in names if n not in first)


def _doc(obj):
    return inspect.cleandoc(obj.__doc__) if obj.__doc__ else ""


def _signature(obj, name):
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return name
    sig = re.sub(r" at 0x[0-9a-f]+", "", sig)  # default objects' addresses change per run
    return f"{name}{sig}"


def _block(text):
    """A docstring as Markdown: verbatim in a text block, so Args / Returns / Example keep their layout."""
    if not text:
        return "*(no docstring)*\n"
    return "```text\n" + text + "\n```\n"


def _first_line(text):
    return text.splitlines()[0] if text else ""


def _members(cls):
    rows = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            rows.append((name, "property", member.fget, _doc(member)))
        elif isinstance(member, (staticmethod, classmethod)):
            rows.append((name, "method", member.__func__, _doc(member.__func__)))
        elif inspect.isfunction(member):
            rows.append((name, "method", member, _doc(member)))
    return rows


def document_module(short):
    module = importlib.import_module(f"keras_lottery.{short}")
    lines = [f"## `keras_lottery.{short}`", "", _doc(module) or "*(no module docstring)*", ""]
    names = getattr(module, "__all__", None) or [
        n for n, v in vars(module).items()
        if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__]
    for name in names:
        obj = getattr(module, name, None)
        if obj is None or inspect.ismodule(obj):
            continue
        if getattr(obj, "__module__", module.__name__) != module.__name__:
            continue  # re-exported from elsewhere: documented there
        anchor = f"keras_lottery.{short}.{name}"
        if inspect.isclass(obj):
            lines += [f"### class `{anchor}`", "", f"`{_signature(obj, name)}`", "", _block(_doc(obj))]
            for mname, kind, func, doc in _members(obj):
                label = mname if kind == "property" else _signature(func, mname).replace("(self, ", "(").replace("(self)", "()")
                lines += [f"- **`{label}`**" + (" *(property)*" if kind == "property" else "")
                          + (f": {_first_line(doc)}" if doc else "")]
            lines.append("")
        elif callable(obj):
            lines += [f"### `{anchor}`", "", f"`{_signature(obj, name)}`", "", _block(_doc(obj))]
        else:
            # without the memory addresses of functions, so the page regenerates identically
            text = re.sub(r" at 0x[0-9a-f]+>", ">", repr(obj))
            lines += [f"### `{anchor}`", "", f"Constant: `{text:.200}`", ""]
    return "\n".join(lines)


def render():
    modules = public_modules()
    out = [
        "# API reference",
        "",
        "Generated from the docstrings by `python scripts/gen_api_docs.py`; do not edit by hand.",
        "The names most users need are re-exported by `import keras_lottery as kl`",
        "(`kl.IMP`, `kl.to_tf_keras`, `kl.data.load`, ...); `keras_lottery.tuning` is imported",
        "explicitly because it loads keras-tuner (and Keras 3).",
        "",
        "## Modules",
        "",
    ]
    for short in modules:
        module = importlib.import_module(f"keras_lottery.{short}")
        out.append(f"- [`keras_lottery.{short}`](#keras_lottery{short}): {_first_line(_doc(module))}")
    out.append("")
    for short in modules:
        out.append(document_module(short))
    return "\n".join(out).rstrip() + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate docs/api.md from docstrings.")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="only check that the file is current")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = open(args.out).read() if os.path.exists(args.out) else ""
        if current != text:
            print(f"{args.out} is stale: run python scripts/gen_api_docs.py", file=sys.stderr)
            return 1
        print(f"{args.out} is current")
        return 0
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out} ({len(text.splitlines())} lines, {len(public_modules())} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
