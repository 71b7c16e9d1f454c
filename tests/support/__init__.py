"""Real processes and fixtures that several test layers drive: nodes, upstreams, images."""
