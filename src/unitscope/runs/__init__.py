"""The bundled scans and atlases of the report, run through the command line's own commands
(``python -m unitscope.runs.scan``, ``python -m unitscope.runs.atlas``): they sit with the CLI and the demo, above the
papers' studies, because they drive ``unitscope scan`` and ``unitscope atlas`` as a user would."""
