"""Sphinx extension of the book: no live-kernel (thebe) scripts, and each remaining script once per page.

The book is read offline and never starts a kernel, but sphinx-thebe (loaded by Jupyter Book) adds a script that
declares ``const THEBE_JS_URL``, and the theme renders it twice: a console error on every page. This drops the thebe
scripts and any repeated script from each page's context.
"""


def _is_thebe(script) -> bool:
    name = str(getattr(script, "filename", script) or "")
    body = str(getattr(script, "attributes", {}).get("body", ""))
    return "sphinx-thebe" in name or "thebe@" in name or "THEBE_JS_URL" in body


def _dedupe(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (str(getattr(script, "filename", script)), tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen and not _is_thebe(script):
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
