"""Business rules: tenants, keys, deployments, inference, usage. Never imports litestar."""
