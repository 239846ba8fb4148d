"""The geometry of the shared space: the Gram volume and the other joint scores, their indexes, top-k."""
