"""Moved to tests/conftest.py; re-exported until tests/test_experiments.py imports from there.

Delete this file once nothing imports it.
"""

from tests.conftest import (  # noqa: F401
    CREMA_EMOTIONS,
    SAVEE_CODES,
    TESS_EMOTIONS,
    make_all_corpora,
    make_crema_d_tree,
    make_savee_tree,
    make_tess_tree,
)
