"""One module per notebook: the loops, parsing and row-writing of its sections, as the few calls its cells make.
The top layer: studies may import every package but the report, and nothing in lib imports a study."""
