"""Layer 8, the paper: its tables as package data (``tables``), every map between this package's names and the
paper's (``names``) and the audit of its internal consistency (``audit``, ``audit_common``, ``audit_text``)."""

__all__: list[str] = []
