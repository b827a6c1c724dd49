"""containerd registry configuration: `hosts.toml` per upstream, node-side checks."""
