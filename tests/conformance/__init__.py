"""The conformance matrix: every public function on architectures nobody here wrote (see test_matrix.py)."""
