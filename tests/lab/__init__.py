"""Lab fidelity tests: each stand-in held to its real twin's documented behaviour."""
