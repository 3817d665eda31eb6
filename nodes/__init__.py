"""Device and edge nodes: models, tasks, the speculative-decoding core and verification policies."""
