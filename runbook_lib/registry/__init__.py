"""Docker Registry HTTP API v2: the client the proofs and the pull engine use."""
