"""Params: one dataclass per params.yaml section (sections), the rules beside its fields
(rules), and the reading and checking of the file (loading)."""
