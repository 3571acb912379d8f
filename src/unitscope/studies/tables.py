"""How every study writes a table: CSV for machines, Markdown for people, side by side.

>>> import pandas as pd, tempfile, os
>>> d = tempfile.mkdtemp()
>>> write_table(pd.DataFrame({"method": ["conductance"], "pearson": [0.8512]}), d, "agreement", index=False)
['agreement.csv', 'agreement.md']
>>> print(open(os.path.join(d, "agreement.md")).read().splitlines()[-1])
| conductance |     0.851 |
"""

from __future__ import annotations

import os

import pandas as pd

__all__ = ["write_table"]


def write_table(df: pd.DataFrame, out: str, name: str, *, index: bool = True) -> list[str]:
    """Write ``out/name.csv`` and ``out/name.md`` (three decimals; plain text if ``tabulate`` is missing) and
    return their file names."""
    df.to_csv(os.path.join(out, f"{name}.csv"), index=index)
    try:
        text = df.to_markdown(index=index, floatfmt=".3f")
    except ImportError:
        text = df.to_string(index=index)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(text + "\n")
    return [f"{name}.csv", f"{name}.md"]
