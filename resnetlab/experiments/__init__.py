"""Experiments: the paper's evidence (degradation, Table 6, layer responses), reproduced."""
